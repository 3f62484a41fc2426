"""The ITCH benchmark runs end to end on a small simulated file and reports every parser."""
from ops.bench.itch import main


def test_bench_reports_ours_beside_pypi(capsys):
    main(["--messages", "5000", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "5,000 messages, 0 bad frames" in out
    assert "framing: vectorized vs a Python walk" in out
    assert "parse: tickstack vs itchfeed" in out
    assert "feed path" in out
