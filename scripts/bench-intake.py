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

A real list archive instead of the generated mbox:

  --mbox FILE [--mboxrd]   an existing mbox (`--mboxrd`: its `From ` lines are
                           quoted as mboxrd; both tools are told so)
  --public-inbox GITDIR    a public-inbox v2 epoch (bare git repository, one
                           mail per commit in blob `m`), converted once into an
                           mboxrd file in a temporary directory (implies
                           --mboxrd; nothing of it is kept)

Usage: scripts/bench-intake.py [--commits N | --mbox FILE [--mboxrd] |
                                --public-inbox GITDIR] [--repeat R] [--workdir DIR]
                               [--binary PATH ...]
"""

import argparse
import json
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


def public_inbox_to_mboxrd(gitdir, path):
    """Every mail of a public-inbox epoch, oldest first, as one mboxrd file.

    The mails are streamed through `git cat-file --batch` (no shell: the
    blob contents never reach a command line). mboxrd quoting: a line of
    zero or more `>` then `From ` gets one more `>`, so the split gives back
    the mail's bytes exactly.
    """
    revs = subprocess.run(["git", "--git-dir", gitdir, "rev-list", "--reverse", "master"],
                          check=True, stdout=subprocess.PIPE).stdout.split()
    cat = subprocess.Popen(["git", "--git-dir", gitdir, "cat-file", "--batch"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    import re
    import threading

    quoted = re.compile(rb"^(>*From )", re.M)

    def feed():
        for rev in revs:
            cat.stdin.write(rev + b":m\n")
        cat.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    count = 0
    with open(path, "wb") as out:
        for _ in revs:
            header = cat.stdout.readline().split()
            if len(header) != 3 or header[1] != b"blob":
                continue  # a commit without `m` (a deletion): nothing to take
            body = cat.stdout.read(int(header[2]))
            cat.stdout.read(1)  # the newline after each object
            if not body.endswith(b"\n"):
                body += b"\n"
            out.write(b"From mboxrd@z Thu Jan  1 00:00:00 1970\n")
            out.write(quoted.sub(rb">\1", body))
            out.write(b"\n")
            count += 1
    writer.join()
    if cat.wait() != 0:
        sys.exit(f"git cat-file --batch in {gitdir} failed")
    return count


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
    ap.add_argument("--mbox", default=None, help="benchmark this mbox instead of the generated one")
    ap.add_argument("--mboxrd", action="store_true", help="the mbox is mboxrd-quoted (git mailsplit --mboxrd)")
    ap.add_argument("--public-inbox", default=None, metavar="GITDIR",
                    help="convert this public-inbox epoch into a temporary mboxrd and benchmark it")
    ap.add_argument("--binary", action="append", default=None,
                    help="time this patchline binary (default: build target/release); given twice or more, "
                         "every repeat runs them all after the same mailsplit run (before/after comparisons)")
    args = ap.parse_args()

    if args.binary:
        binaries = [os.path.abspath(b) for b in args.binary]
    else:
        run(["cargo", "build", "--release", "--quiet", "--bin", "patchline"], cwd=ROOT)
        binaries = [os.path.join(ROOT, "target", "release", "patchline")]
    data = os.path.join(ROOT, "target", "bench-data")
    os.makedirs(data, exist_ok=True)
    converted = None
    mboxrd = args.mboxrd
    if args.public_inbox:
        converted = tempfile.mkdtemp(prefix="bench-inbox-", dir=args.workdir or data)
        mbox = os.path.join(converted, "inbox.mboxrd")
        n = public_inbox_to_mboxrd(args.public_inbox, mbox)
        print(f"converted {n} mails of {args.public_inbox} into {mbox}", file=sys.stderr)
        mboxrd = True
    elif args.mbox:
        mbox = os.path.abspath(args.mbox)
    else:
        mbox = os.path.join(data, f"patches-{args.commits}.mbox")
        if not os.path.exists(mbox):
            print(f"generating {args.commits} patches as 5-patch series with git format-patch ...", file=sys.stderr)
            make_mbox(args.commits, mbox + ".tmp")
            os.rename(mbox + ".tmp", mbox)
    try:
        bench(args, binaries, data, mbox, mboxrd)
    finally:
        if converted:
            shutil.rmtree(converted)


def bench(args, binaries, data, mbox, mboxrd):
    """Each repeat: mailsplit, then every binary, each in a directory of its own."""
    size = os.path.getsize(mbox)
    split_times = []
    ours = {b: {"times": [], "rss": 0, "summary": None} for b in binaries}
    largest = count = 0
    fmt = "mboxrd" if mboxrd else "none"
    for r in range(args.repeat):
        work = tempfile.mkdtemp(prefix="bench-intake-", dir=args.workdir or data)
        try:
            outdir = os.path.join(work, "split")
            os.makedirs(outdir)
            # Each tool starts with nothing dirty: patchline's syncfs would
            # otherwise also write out what mailsplit left in the page cache.
            os.sync()
            t, _, _ = timed(["git", "mailsplit"] + (["--mboxrd"] if mboxrd else []) + ["-o" + outdir, mbox])
            split_times.append(t)
            largest = max(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
            count = len(os.listdir(outdir))
            # The order rotates: a later run finds the file system fuller.
            for n, binary in enumerate(binaries[r % len(binaries):] + binaries[:r % len(binaries)]):
                os.sync()
                state = os.path.join(work, f"patchline-{n}")
                os.makedirs(state)
                with open(os.path.join(state, "patchline.toml"), "w") as cfg:
                    cfg.write(f'[intake]\nsource = "mbox"\npath = {json.dumps(mbox)}\nmbox_format = "{fmt}"\n')
                t, maxrss, out = timed([binary, "--config", os.path.join(state, "patchline.toml"), "collect", "--json"])
                ours[binary]["times"].append(t)
                ours[binary]["rss"] = max(ours[binary]["rss"], maxrss)
                ours[binary]["summary"] = json.loads(out)
        finally:
            shutil.rmtree(work)
    best_split = min(split_times)
    print(f"mbox: {size / 1e6:.1f} MB, {count} mails (git mailsplit), largest mail {largest / 1024:.1f} KiB")
    print(f"git mailsplit{' --mboxrd' if mboxrd else ''} (split only): best {best_split:.2f} s of {args.repeat}"
          f" (all: {' '.join(f'{t:.2f}' for t in split_times)})")
    for binary in binaries:
        o = ours[binary]
        summary, best = o["summary"], min(o["times"])
        print(f"patchline collect ({binary}):")
        print(f"  stored {summary['mails']} mails, {summary['patches']} patches, "
              f"{summary['series_complete']} complete series")
        print(f"  whole intake: best {best:.2f} s of {args.repeat} (all: {' '.join(f'{t:.2f}' for t in o['times'])})")
        print(f"  ratio mailsplit/patchline: {best_split / best:.2f}  (>= 1.0 is the target)")
        print(f"  peak RSS: {o['rss'] / 1024:.1f} MiB (mbox {size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
