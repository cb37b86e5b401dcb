"""The warp-stall summary of an Nsight Compute source page (bench/stalls.py)."""

from lstmgen.bench.stalls import kernels, report

HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)", "stall_barrier", "stall_long_sb",
          "stall_barrier (Not Issued)"]


def _page(*kernel_rows):
    rows = []
    for name, instructions in kernel_rows:
        rows += [["Kernel Name", name, ""], HEADER]
        rows += [[f"0x{i:x}", source, str(total), str(barrier), str(long_sb), "0"]
                 for i, (source, total, barrier, long_sb) in enumerate(instructions)]
    return rows


def test_rows_are_split_by_kernel_and_keyed_by_header():
    page = _page(("forward", [("BAR.SYNC", 30, 30, 0), ("STS.128 [R1], R2", 10, 0, 10)]),
                 ("backward", [("HMMA.16816.F32", 5, 0, 5)]))
    found = kernels(page)
    assert list(found) == ["forward", "backward"]
    assert [row["Source"] for row in found["forward"]] == ["BAR.SYNC", "STS.128 [R1], R2"]
    assert found["backward"][0]["stall_long_sb"] == "5"


def test_report_gives_shares_by_reason_and_the_top_instructions_in_program_order():
    instructions = kernels(_page(("forward", [("IADD3", 5, 5, 0), ("BAR.SYNC", 60, 60, 0),
                                              ("STS.128", 35, 0, 35)])))["forward"]
    lines = report(instructions, top=2)
    assert lines[0] == "  by reason: barrier 65%, long_sb 35%"
    # The two largest, listed in program order with their main reasons.
    assert "BAR.SYNC" in lines[1] and "60.0%" in lines[1] and "barrier:60" in lines[1]
    assert "STS.128" in lines[2] and "35.0%" in lines[2] and "long_sb:35" in lines[2]
    assert len(lines) == 3
