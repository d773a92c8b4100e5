#!/usr/bin/env python3
"""Intake benchmark: `git mailsplit` alone vs patchline's whole intake.

Builds (once, cached under target/bench-data/) a repository of N commits with
`git fast-import` and turns it into one mbox with `git format-patch --stdout`,
real patch mails of roughly 11 KiB each. Then, in the same run, times

  * `git mailsplit -o DIR mbox` (split only), and
  * `patchline collect` on a fresh state (split + parse + classify + series +
    archive with fsync + SQLite),

and prints both times, the ratio (mailsplit time / patchline time: >= 1.0
means patchline's whole intake is at least as fast as mailsplit's split) and
patchline's peak RSS next to the largest mail's size.

Usage: scripts/bench-intake.py [--commits N] [--repeat R] [--workdir DIR]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def make_mbox(n, path):
    """N commits (~11 KiB patch mails) posted as 5-patch series with covers."""
    repo = tempfile.mkdtemp(prefix="bench-repo-")
    run(["git", "init", "-q", repo])
    lines = [f"line {i} of a moderately long source file, padded to look real ......" for i in range(200)]
    stream = []
    mark = 0
    for c in range(n):
        mark += 1
        for j in range(18):
            k = (c * 7 + j * 3) % 200
            lines[k] = f"commit {c} rewrote line {k} with text that makes the diff realistic ......"
        blob = ("\n".join(lines) + "\n").encode()
        stream.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(blob), blob))
        msg = (
            f"subsystem{c % 13}: change number {c}\n\n"
            f"This is the body of change {c}. It explains why the change is\n"
            f"needed, as a real commit message would.\n\n"
            f"Signed-off-by: Bench Author <bench{c % 50}@example.org>\n"
        ).encode()
        when = 1_700_000_000 + c * 60
        stream.append(
            b"commit refs/heads/master\nmark :%d\nauthor Bench Author <bench@example.org> %d +0000\n"
            b"committer Bench Author <bench@example.org> %d +0000\ndata %d\n%s\n"
            % (mark + 1_000_000, when, when, len(msg), msg)
        )
        if c > 0:
            stream.append(b"from :%d\n" % (mark + 1_000_000 - 1))
        stream.append(b"M 100644 :%d src/file%d.c\n\n" % (mark, c % 5))
    run(["git", "-C", repo, "fast-import", "--quiet"], input=b"".join(stream))
    # Mailing-list shaped: threaded series of 5 patches, each with a cover
    # letter (6 mails), as `git send-email` would post them.
    shas = subprocess.run(["git", "-C", repo, "rev-list", "--reverse", "master"],
                          check=True, stdout=subprocess.PIPE).stdout.decode().split()
    with open(path, "wb") as out:
        for start in range(0, len(shas), 5):
            chunk = shas[start:start + 5]
            base = [f"{chunk[0]}^..{chunk[-1]}"] if start > 0 else ["--root", chunk[-1]]
            # format-patch makes cover Message-IDs from the time and the
            # committer: a committer per series keeps them unique.
            env = dict(os.environ, GIT_COMMITTER_EMAIL=f"series{start}@example.org")
            run(["git", "-C", repo, "format-patch", "--stdout", "--thread=shallow", "--cover-letter"] + base,
                stdout=out, env=env)
    shutil.rmtree(repo)


def timed(cmd, cwd=None):
    """Wall time, peak RSS (KiB, of this command alone, via GNU time) and stdout."""
    rss_file = tempfile.mktemp(prefix="bench-rss-")
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr.decode()}")
    with open(rss_file) as f:
        rss = int(f.read().split()[-1])
    os.unlink(rss_file)
    return elapsed, rss, proc.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=16670,
                    help="patches to generate; with a cover letter per 5 patches, 16670 make ~20,000 mails")
    ap.add_argument("--workdir", default=None,
                    help="where both tools write (default target/bench-data); a fresh file system gives steadier figures")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    run(["cargo", "build", "--release", "--quiet", "--bin", "patchline"], cwd=ROOT)
    binary = os.path.join(ROOT, "target", "release", "patchline")
    data = os.path.join(ROOT, "target", "bench-data")
    os.makedirs(data, exist_ok=True)
    mbox = os.path.join(data, f"patches-{args.commits}.mbox")
    if not os.path.exists(mbox):
        print(f"generating {args.commits} patches as 5-patch series with git format-patch ...", file=sys.stderr)
        make_mbox(args.commits, mbox + ".tmp")
        os.rename(mbox + ".tmp", mbox)
    size = os.path.getsize(mbox)

    split_times, ours_times, rss = [], [], 0
    largest = 0
    for _ in range(args.repeat):
        work = tempfile.mkdtemp(prefix="bench-intake-", dir=args.workdir or data)
        try:
            outdir = os.path.join(work, "split")
            os.makedirs(outdir)
            t, _, out = timed(["git", "mailsplit", "-o" + outdir, mbox])
            split_times.append(t)
            largest = max(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
            count = len(os.listdir(outdir))
            with open(os.path.join(work, "patchline.toml"), "w") as cfg:
                cfg.write(f'[intake]\nsource = "mbox"\npath = "{mbox}"\nmbox_format = "none"\n')
            t, maxrss, out = timed([binary, "--config", os.path.join(work, "patchline.toml"), "collect", "--json"])
            ours_times.append(t)
            rss = max(rss, maxrss)
        finally:
            shutil.rmtree(work)
    import json

    summary = json.loads(out)
    best_split, best_ours = min(split_times), min(ours_times)
    print(f"mbox: {size / 1e6:.1f} MB, {count} mails (git mailsplit), patchline stored {summary['mails']} mails, "
          f"{summary['patches']} patches, {summary['series_complete']} complete series")
    print(f"git mailsplit (split only):          best {best_split:.2f} s of {args.repeat}")
    print(f"patchline collect (whole intake):    best {best_ours:.2f} s of {args.repeat}")
    print(f"ratio mailsplit/patchline:           {best_split / best_ours:.2f}  (>= 1.0 is the target)")
    print(f"patchline peak RSS:                  {rss / 1024:.1f} MiB (largest mail {largest / 1024:.1f} KiB, mbox {size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
