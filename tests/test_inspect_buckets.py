"""`kvid inspect` shows how the clips fall into the loader's shape buckets, with the edges
given as flags (the loader's defaults otherwise), in the text summary and the HTML report."""

from __future__ import annotations

import re

from loader_fixtures import CLIPS

from pipelines.cli import main


def bucket_lines(text: str) -> dict[str, int]:
    block = text.split("loader buckets", 1)[1].splitlines()[1:]
    out = {}
    for line in block:
        m = re.match(r"^  (\S.*?)\s+\|\s*#*\s+(\d+)$", line)
        if not m:
            break
        out[m.group(1)] = int(m.group(2))
    return out


def test_inspect_prints_the_bucket_histogram(clip_dir, capsys):
    assert main(["inspect", clip_dir, "--no-html"]) == 0
    default = bucket_lines(capsys.readouterr().out)
    shapes = [(w, h) for w, h, _, _ in CLIPS] + [(256, 144)]  # and the undecodable clip's row
    assert sum(default.values()) == len(shapes)
    # 16:9 at 256x144: 5 s, 3 s, 4.2 s, 1 s, 3.75 s clips and the 4 s corrupt row
    assert default["16:9 <480px <4s"] == 3 and default["16:9 <480px 4-8s"] == 3

    assert main(["inspect", clip_dir, "--no-html", "--bucket-duration-edges", "", "--bucket-aspect-ratios",
                 "9:16,1:1,4:3,16:9"]) == 0
    custom = bucket_lines(capsys.readouterr().out)
    assert custom == {"16:9 <480px any": 6, "4:3 <480px any": 3, "1:1 <480px any": 2, "9:16 <480px any": 2}


def test_report_has_the_bucket_table(clip_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(clip_dir, folder)
    assert main(["inspect", str(folder), "--thumbs", "0", "--bucket-resolution-edges", "100,144"]) == 0
    page = (folder / "report.html").read_text(encoding="utf-8")
    table = page.split("<h2>loader buckets</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>.*?</td><td>(\d+)</td></tr>", table)
    assert {label: int(n) for label, n in rows} == {  # every clip's short side is 144: the top bin
        "16:9 &gt;=144px &lt;4s": 3, "16:9 &gt;=144px 4-8s": 3, "9:16 &gt;=144px &lt;4s": 2,
        "1:1 &gt;=144px 4-8s": 2, "4:3 &gt;=144px &lt;4s": 2, "4:3 &gt;=144px 4-8s": 1}


def test_bad_bucket_edges_are_one_line(clip_dir, capsys):
    assert main(["inspect", clip_dir, "--no-html", "--bucket-duration-edges", "8,4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvid: error: bucket edges: duration_edges must be increasing") and err.count("\n") == 1
