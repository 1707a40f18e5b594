"""msmt.runtime.host: the one-line CPU description results pages carry."""

from __future__ import annotations

from msmt.runtime.host import describe_cpu, parse_cpuinfo, vector_level

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
ZEN1 = "model name\t: AMD EPYC 7571\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8\n"


def test_parse_reads_the_first_processor():
    name, flags = parse_cpuinfo(ZEN4)
    assert name == "AMD EPYC 9R14"
    assert {"avx512f", "avx512_bf16"} <= flags and "amx_tile" not in flags


def test_vector_level_is_the_widest_present():
    assert vector_level(parse_cpuinfo(ZEN1)[1]) == "AVX2"
    assert vector_level(parse_cpuinfo(ZEN4)[1]) == "AVX-512 with BF16"
    assert vector_level(parse_cpuinfo(SAPPHIRE)[1]) == "AMX and AVX-512"
    assert vector_level({"avx512f", "avx2"}) == "AVX-512"
    assert vector_level({"sse2"}) is None


def test_describe_names_model_cores_and_vectors():
    assert describe_cpu(ZEN4, cores=2) == "AMD EPYC 9R14, 2 cores, AVX-512 with BF16"
    assert describe_cpu(ZEN1, cores=2) == "AMD EPYC 7571, 2 cores, AVX2"


def test_describe_without_cpuinfo_falls_back_to_platform():
    text = describe_cpu("", cores=4)
    assert text.endswith("4 cores") and len(text) > len(", 4 cores")


def test_describe_this_machine():
    assert describe_cpu()  # reads /proc/cpuinfo where there is one; never raises
