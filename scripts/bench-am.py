#!/usr/bin/env python3
"""`patchline am` against `git am` on the same patches, in one run.

Builds (once, cached under target/bench-data/) a repository whose history
has N single-patch commits touching a set of source files, exports them with
`git format-patch`, then applies all of them from the same base

  * with `git am` in a fresh clone (work tree and index, as git needs), and
  * with `patchline am` in a fresh bare clone (no work tree),

both clones holding the base history only, so the results are new objects.
Before each timed run: sync, an untimed warm-up run of the same tool on a
clone of its own, busy CPUs (docs/performance.md says why). Prints every
run, the best of each and the ratio (git am time / patchline time), and
checks that every resulting tree id is identical between the tools and to
the original history.

Usage: TMPDIR=/some/fs scripts/bench-am.py [--patches N] [--repeat R]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@example.org",
           GIT_AUTHOR_NAME="Bench Author", GIT_AUTHOR_EMAIL="author@example.org")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, env=ENV, **kw)


def make_history(n, repo):
    """N commits with fast-import: each edits a few lines of one of 20 files."""
    run(["git", "init", "-q", repo])
    files = {f"src/mod{i}.c": [f"/* module {i} line {l} */" for l in range(300)] for i in range(20)}
    stream = []
    mark = 0
    for path, lines in files.items():
        mark += 1
        blob = ("\n".join(lines) + "\n").encode()
        stream.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(blob), blob))
    msg = b"base\n"
    stream.append(b"commit refs/heads/master\nmark :%d\nauthor A <a@example.org> 1700000000 +0000\n"
                  b"committer A <a@example.org> 1700000000 +0000\ndata %d\n%s\n" % (100000, len(msg), msg))
    for i, path in enumerate(files):
        stream.append(b"M 100644 :%d %s\n" % (i + 1, path.encode()))
    stream.append(b"\n")
    prev = 100000
    names = list(files)
    for c in range(n):
        path = names[(c * 7) % len(names)]
        lines = files[path]
        for k in range(3):
            lines[(c * 13 + k * 41) % len(lines)] = f"/* changed by commit {c} ({k}) */"
        mark += 1
        blob = ("\n".join(lines) + "\n").encode()
        stream.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(blob), blob))
        msg = f"mod: change {c}\n\nWhy change {c} is needed.\n\nSigned-off-by: A <a@example.org>\n".encode()
        when = 1700000000 + c * 60
        this = 200000 + c
        stream.append(b"commit refs/heads/master\nmark :%d\nauthor A <a@example.org> %d +0000\n"
                      b"committer A <a@example.org> %d +0000\ndata %d\n%s\nfrom :%d\nM 100644 :%d %s\n\n"
                      % (this, when, when, len(msg), msg, prev, mark, path.encode()))
        prev = this
    run(["git", "-C", repo, "fast-import", "--quiet"], input=b"".join(stream))
    run(["git", "-C", repo, "branch", "base", "master~%d" % n])


def spin_all_cpus(seconds):
    """Keeps every CPU busy for a moment, so that the timed run that follows
    starts on CPUs that are not waking from idle."""
    spin = f"import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < {seconds}: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 1)]
    for p in procs:
        p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    run(["cargo", "build", "--release", "--quiet", "--bin", "patchline"], cwd=ROOT)
    binary = os.path.join(ROOT, "target", "release", "patchline")
    data = os.path.join(ROOT, "target", "bench-data", f"am-{args.patches}")
    if not os.path.exists(os.path.join(data, "done")):
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        print(f"generating {args.patches} commits and their patches ...", file=sys.stderr)
        make_history(args.patches, os.path.join(data, "src"))
        run(["git", "-C", os.path.join(data, "src"), "format-patch", "-q", "-o", os.path.join(data, "patches"),
             "base..master"])
        open(os.path.join(data, "done"), "w").close()
    # The clones start from a repository holding the base history only:
    # the patched results must be new objects, as mailed patches are, not
    # already present in a pack (then both tools would skip writing them
    # and read deep delta chains instead).
    src = os.path.join(data, "base")
    if not os.path.exists(os.path.join(src, "HEAD")):
        run(["git", "clone", "-q", "--bare", "--no-local", "--single-branch", "-b", "base",
             os.path.join(data, "src"), src])
    patches = sorted(os.path.join(data, "patches", p) for p in os.listdir(os.path.join(data, "patches")))

    git_am = lambda repo: run(["git", "-C", repo, "am", "-q"] + patches)
    patchline_am = lambda repo: run([binary, "am", "--repo", repo, "--branch", "master"] + patches,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    git_times, our_times = [], []
    for _ in range(args.repeat):
        work = tempfile.mkdtemp(prefix="bench-am-")
        try:
            # A clone with a work tree for git am, a bare one for patchline;
            # each tool also gets a scratch clone for an untimed warm-up run.
            clones = {}
            for name in ("theirs", "theirs-warm"):
                clones[name] = os.path.join(work, name)
                run(["git", "clone", "-q", "-b", "base", src, clones[name]])
            for name in ("ours", "ours-warm"):
                clones[name] = os.path.join(work, name + ".git")
                run(["git", "clone", "-q", "--bare", src, clones[name]])
                run(["git", "-C", clones[name], "branch", "master", "base"])
            # Each tool starts on a quiet file system (patchline fsyncs its
            # pack before moving the branch, and that must not flush what the
            # clones or the other tool left dirty) and on warm CPUs: right
            # after the idle of a sync, this VM's first ~100 ms run slowly
            # (see docs/performance.md), which a 40 ms run would measure.
            for tool, times, warm, timed in ((git_am, git_times, "theirs-warm", "theirs"),
                                             (patchline_am, our_times, "ours-warm", "ours")):
                os.sync()
                tool(clones[warm])
                spin_all_cpus(0.3)
                t0 = time.perf_counter()
                tool(clones[timed])
                times.append(time.perf_counter() - t0)
            theirs, ours = clones["theirs"], clones["ours"]
            trees = lambda repo, rng: subprocess.run(
                ["git", "-C", repo, "log", "--format=%T", rng], check=True, stdout=subprocess.PIPE).stdout.split()
            a, b = trees(theirs, "base@{upstream}..HEAD"), trees(ours, "base..master")
            expected = trees(os.path.join(data, "src"), "base..master")
            same = sum(1 for x, y in zip(a, b) if x == y)
            if len(a) != len(patches) or a != b or a != expected:
                sys.exit(f"trees differ: {same} of {len(patches)} identical")
        finally:
            shutil.rmtree(work)
    print("git am runs (ms):", " ".join(f"{t * 1000:.0f}" for t in git_times), file=sys.stderr)
    print("patchline am runs (ms):", " ".join(f"{t * 1000:.0f}" for t in our_times), file=sys.stderr)
    g, o = min(git_times), min(our_times)
    print(f"patches: {len(patches)}; trees identical: {len(patches)}/{len(patches)} (100%)")
    print(f"git am:          best {g * 1000:.0f} ms of {args.repeat}")
    print(f"patchline am:    best {o * 1000:.0f} ms of {args.repeat}")
    print(f"ratio git am / patchline am: {g / o:.1f}x  (target >= 20x)")


if __name__ == "__main__":
    main()
