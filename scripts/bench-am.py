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

With `--repo URL-or-path --range A..B` the corpus is a real history
instead: the repository is cloned (bare, once, under target/bench-data/),
the commits of A..B (no merges) are exported with `git format-patch`, and
the clones start at A. `--big-tree` makes the synthetic history on a tree
of 60,000 files with 500 patches spread over it. `--tmpfs` runs every tool
once more in /dev/shm (CPU only, no disk I/O) and prints both ratios. Peak
RSS (each tool's, from wait4) and patchline's time per patch and per MB of
new objects are printed too.

Usage: TMPDIR=/some/fs scripts/bench-am.py [--patches N] [--repeat R]
       scripts/bench-am.py --repo https://gitlab.com/libvirt/libvirt-python.git --range v9.0.0..v10.0.0 --tmpfs
       scripts/bench-am.py --big-tree --tmpfs
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@example.org",
           GIT_AUTHOR_NAME="Bench Author", GIT_AUTHOR_EMAIL="author@example.org")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, env=ENV, **kw)


def make_history(n, repo, nfiles=20, lines_per_file=300):
    """N commits with fast-import: each edits a few lines of one of the
    files (20 of 300 lines; --big-tree: 60,000 of 20 lines in 600
    directories)."""
    run(["git", "init", "-q", repo])
    if nfiles > 1000:
        files = {f"src/d{i % 600}/f{i}.c": [f"/* file {i} line {l} */" for l in range(lines_per_file)]
                 for i in range(nfiles)}
    else:
        files = {f"src/mod{i}.c": [f"/* module {i} line {l} */" for l in range(lines_per_file)]
                 for i in range(nfiles)}
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
        path = names[(c * 7919) % len(names)]
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


def timed(cmd, **kw):
    """Runs `cmd`; its wall time in seconds and its peak RSS in KiB, of the
    command alone: through GNU time, as wait4's figure for a child of this
    script starts at the script's own size at the fork (after generating a
    big tree, ~200 MiB)."""
    rss_file = tempfile.mktemp(prefix="bench-rss-")
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, env=ENV, **kw)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode})")
    with open(rss_file) as f:
        rss = int(f.read().split()[-1])
    os.unlink(rss_file)
    return elapsed, rss


def real_corpus(data, repo, rng):
    """`src`: a bare clone of `repo` whose `master` is the end of `rng`
    and `base` its start; the patches of the range (no merges)."""
    start, end = rng.split("..", 1)
    src = os.path.join(data, "src")
    run(["git", "clone", "-q", "--bare", repo, src])
    run(["git", "-C", src, "branch", "-f", "base", start])
    run(["git", "-C", src, "branch", "-f", "master", end])
    run(["git", "-C", src, "format-patch", "-q", "--no-merges", "--topo-order", "-o",
         os.path.join(data, "patches"), f"{start}..{end}"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--repo", help="a real history to take the corpus from (URL or path)")
    ap.add_argument("--range", help="A..B of --repo: the patches of B not in A")
    ap.add_argument("--big-tree", action="store_true", help="60,000 files, 500 patches")
    ap.add_argument("--tmpfs", action="store_true", help="also run in /dev/shm and print both ratios")
    ap.add_argument("--binary", help="patchline binary (default: a release build)")
    args = ap.parse_args()
    if bool(args.repo) != bool(args.range):
        sys.exit("--repo and --range go together")
    if args.binary:
        binary = os.path.abspath(args.binary)
    else:
        run(["cargo", "build", "--release", "--quiet", "--bin", "patchline"], cwd=ROOT)
        binary = os.path.join(ROOT, "target", "release", "patchline")
    if args.repo:
        corpus = "real-" + "".join(c if c.isalnum() else "-" for c in f"{args.repo}-{args.range}")[-80:]
    elif args.big_tree:
        args.patches = 500
        corpus = "big-tree-500"
    else:
        corpus = f"am-{args.patches}"
    data = os.path.join(ROOT, "target", "bench-data", corpus)
    if not os.path.exists(os.path.join(data, "done")):
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        if args.repo:
            print(f"cloning {args.repo} and exporting {args.range} ...", file=sys.stderr)
            real_corpus(data, args.repo, args.range)
        else:
            print(f"generating {args.patches} commits and their patches ...", file=sys.stderr)
            if args.big_tree:
                make_history(args.patches, os.path.join(data, "src"), nfiles=60000, lines_per_file=20)
            else:
                make_history(args.patches, os.path.join(data, "src"))
            run(["git", "-C", os.path.join(data, "src"), "format-patch", "-q", "-o",
                 os.path.join(data, "patches"), "base..master"])
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

    mail_mb = sum(os.path.getsize(p) for p in patches) / 1e6
    git_am = lambda repo: timed(["git", "-C", repo, "am", "-q", "--keep-cr"] + patches)
    patchline_am = lambda repo: timed([binary, "am", "--keep-cr", "--repo", repo, "--branch", "master"] + patches,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    places = [("disk", tempfile.gettempdir())] + ([("tmpfs", "/dev/shm")] if args.tmpfs else [])
    results = {}
    for place, where in places:
        git_times, our_times, git_rss, our_rss, new_mb = [], [], [], [], []
        for _ in range(args.repeat):
            work = tempfile.mkdtemp(prefix="bench-am-", dir=where)
            try:
                # A clone with a work tree for git am, a bare one for
                # patchline; each tool also gets a scratch clone for an
                # untimed warm-up run.
                clones = {}
                for name in ("theirs", "theirs-warm"):
                    clones[name] = os.path.join(work, name)
                    run(["git", "clone", "-q", "-b", "base", src, clones[name]])
                for name in ("ours", "ours-warm"):
                    clones[name] = os.path.join(work, name + ".git")
                    run(["git", "clone", "-q", "--bare", src, clones[name]])
                    run(["git", "-C", clones[name], "branch", "-f", "master", "base"])
                before = dir_size(os.path.join(clones["ours"], "objects"))
                # Each tool starts on a quiet file system (patchline fsyncs
                # its pack before moving the branch, and that must not flush
                # what the clones or the other tool left dirty) and on warm
                # CPUs (see docs/performance.md).
                for tool, times, rss, warm, timed_clone in (
                        (git_am, git_times, git_rss, "theirs-warm", "theirs"),
                        (patchline_am, our_times, our_rss, "ours-warm", "ours")):
                    os.sync()
                    tool(clones[warm])
                    spin_all_cpus(0.3)
                    elapsed, peak = tool(clones[timed_clone])
                    times.append(elapsed)
                    rss.append(peak)
                new_mb.append((dir_size(os.path.join(clones["ours"], "objects")) - before) / 1e6)
                theirs, ours = clones["theirs"], clones["ours"]
                trees = lambda repo, rng: subprocess.run(
                    ["git", "-C", repo, "log", "--format=%T", rng], check=True,
                    stdout=subprocess.PIPE).stdout.split()
                a, b = trees(theirs, "base@{upstream}..HEAD"), trees(ours, "base..master")
                same = sum(1 for x, y in zip(a, b) if x == y)
                if len(a) != len(patches) or a != b:
                    sys.exit(f"trees differ from git am's: {same} of {len(patches)} identical ({place})")
            finally:
                shutil.rmtree(work)
        print(f"[{place}] git am runs (ms):", " ".join(f"{t * 1000:.0f}" for t in git_times), file=sys.stderr)
        print(f"[{place}] patchline am runs (ms):", " ".join(f"{t * 1000:.0f}" for t in our_times),
              file=sys.stderr)
        results[place] = (git_times, our_times, max(git_rss), max(our_rss), max(new_mb))
    print(f"corpus: {corpus}: {len(patches)} patches, {mail_mb:.1f} MB of mail; "
          f"trees identical to git am's: {len(patches)}/{len(patches)}")
    for place, (gs, os_, grss, orss, mb) in results.items():
        g, o = min(gs), min(os_)
        gm, om = statistics.median(gs), statistics.median(os_)
        print(f"[{place}] git am best {g * 1000:.0f} ms, patchline am best {o * 1000:.0f} ms of {args.repeat}: "
              f"ratio {g / o:.1f}x (target {'>= 20x' if place == 'disk' else '>= 10x'}); "
              f"medians {gm * 1000:.0f} / {om * 1000:.0f} ms: ratio {gm / om:.1f}x")
        print(f"[{place}] peak RSS: git am {grss / 1024:.0f} MiB, patchline {orss / 1024:.0f} MiB (target <= 64 MiB)")
        print(f"[{place}] patchline: {o * 1e6 / len(patches):.0f} us per patch, "
              f"{o * 1000 / max(mb, 0.001):.0f} ms per MB of new objects ({mb:.1f} MB)")


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


if __name__ == "__main__":
    main()
