#!/usr/bin/env python3
"""Series assembly compared with b4 on real list traffic.

    python3 scripts/compare-b4.py (--epoch GITDIR | --mbox FILE) [--threads 150]
                                  [--b4-python PY] [--patchline target/debug/patchline]
                                  [--keep DIR] [--check]

GITDIR is a public-inbox epoch (a git repository whose every commit holds
one mail in the file `m`), e.g. a mirror of a real list fetched from the
public `linux-mailinglist-archives` repositories. The script reads every
mail, groups them into threads, takes a deterministic sample of patch
threads (every k-th, at least --threads), and for each thread asks

- b4 (its Python API, `b4.LoreMailbox().get_series()`, the same code
  `b4 am` runs, offline): which revision is the series, how many patches
  it expects, which Message-IDs are its patches, is it complete;
- patchline (`patchline collect` on an mbox of the sampled threads, fresh
  state, then its state database): the series holding those patches, its
  version, total, members and state.

It prints how many series agree on grouping (the same patch Message-IDs),
version, total and completeness, and each disagreement with the thread's
Message-ID. b4 needs a virtualenv with `pip install b4` (--b4-python, or
/tmp/b4venv/bin/python). Nothing is written to the repository.

`--mbox FILE` reads the mails from an mbox instead (CI runs it on
worker/tests/fixtures/real/kvmarm-slice.mbox, 40 small real threads);
`--check` exits 1 when a compared series disagrees and is not one of the
`--known` Message-IDs (disagreements documented in docs/intake.md).
"""
import argparse
import email
import email.policy
import mailbox
import os
import re
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def read_epoch(gitdir):
    """Every mail of the epoch, oldest first, as raw bytes."""
    revs = subprocess.run(["git", "-C", gitdir, "rev-list", "--reverse", "HEAD"],
                          capture_output=True, check=True).stdout.split()
    # The requests from a file: writing them to a pipe while git's answers
    # fill the other one would deadlock.
    requests = tempfile.TemporaryFile()
    requests.write(b"".join(r + b":m\n" for r in revs))
    requests.seek(0)
    cat = subprocess.Popen(["git", "-C", gitdir, "cat-file", "--batch"],
                           stdin=requests, stdout=subprocess.PIPE)
    out = cat.stdout
    mails = []
    while True:
        header = out.readline()
        if not header:
            break
        parts = header.split()
        if len(parts) == 2 and parts[1] == b"missing":
            continue  # a removal commit (`d`), no `m`
        size = int(parts[2])
        mails.append(out.read(size))
        out.read(1)
    cat.wait()
    return mails


def msgid_of(value):
    m = re.search(r"<([^>]+)>", value or "")
    return m.group(1).strip() if m else None


def threads_of(mails):
    """Threads as lists of (raw, message) in arrival order, keyed by root."""
    parsed = []
    by_id = {}
    for raw in mails:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        mid = msgid_of(msg.get("Message-ID"))
        if not mid or mid in by_id:
            continue
        parent = msgid_of(msg.get("In-Reply-To"))
        refs = re.findall(r"<([^>]+)>", str(msg.get("References") or ""))
        if not parent and refs:
            parent = refs[-1]
        by_id[mid] = (raw, msg, parent, refs)
        parsed.append(mid)

    def root(mid):
        seen = set()
        while True:
            _, _, parent, refs = by_id[mid]
            # The first known reference is the thread's start (deep threads).
            first = next((r for r in refs if r in by_id), None)
            if first and first != mid and first not in seen:
                seen.add(mid)
                mid = first
                continue
            if parent in by_id and parent not in seen:
                seen.add(mid)
                mid = parent
                continue
            return mid

    threads = {}
    for mid in parsed:
        threads.setdefault(root(mid), []).append(mid)
    return by_id, threads


PATCH_RE = re.compile(r"\[[^\]]*PATCH[^\]]*\]", re.I)


def is_patch_thread(by_id, root):
    subject = str(by_id[root][1].get("Subject") or "")
    return bool(PATCH_RE.search(subject)) and not re.match(r"\s*(re|aw|fwd?)\s*:", subject, re.I)


def b4_series(b4_python, thread_mboxes):
    """b4's view of each thread: revision, expected, patch ids, complete."""
    code = r'''
import json, mailbox, sys, logging
import b4
b4.logger.setLevel(logging.CRITICAL)
out = {}
for root, path in json.load(sys.stdin).items():
    lmbx = b4.LoreMailbox()
    for msg in mailbox.mbox(path, factory=None):
        m = b4.email.message_from_bytes(msg.as_bytes(), policy=b4.emlpolicy)
        try:
            lmbx.add_message(m)
        except Exception as e:
            pass
    try:
        lser = lmbx.get_series(codereview_trailers=False)
    except Exception as e:
        lser = None
    if lser is None:
        out[root] = None
        continue
    out[root] = {
        "revision": lser.revision,
        "expected": lser.expected,
        "complete": bool(lser.complete),
        "patches": [p.msgid if p is not None else None for p in lser.patches[1:]],
    }
json.dump(out, sys.stdout)
'''
    import json
    run = subprocess.run([b4_python, "-c", code], input=json.dumps(thread_mboxes),
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"b4 failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout)


def patchline_series(patchline, work, mbox_path):
    """patchline's series of the mbox: version, total, state, patch ids."""
    cfg = os.path.join(work, "patchline.toml")
    os.makedirs(os.path.join(work, "repo.git"), exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", os.path.join(work, "repo.git")], check=True)
    with open(cfg, "w") as f:
        f.write(f'[intake]\nsource = "mbox"\nmbox_format = "mboxrd"\npath = "{mbox_path}"\n'
                # Real threads are days long: no series expires while compared.
                'incomplete_deadline_hours = 1000000\n\n'
                '[[repos]]\nname = "repo"\npath = "repo.git"\n')
    run = subprocess.run([patchline, "--config", cfg, "collect", "--json"], capture_output=True, text=True)
    if run.returncode not in (0, 1):
        sys.exit(f"patchline collect failed ({run.returncode}): {run.stderr[-2000:]}")
    db = sqlite3.connect(os.path.join(work, "patchline.db"))
    rows = db.execute(
        "SELECT s.id, s.version, s.total, s.state, s.missing, p.idx, m.message_id FROM series s "
        "JOIN patches p ON p.series_id = s.id JOIN mails m ON m.id = p.mail_id").fetchall()
    series = {}
    for sid, version, total, state, missing, idx, mid in rows:
        s = series.setdefault(sid, {"version": version, "total": total, "state": state,
                                    "missing": missing, "patches": {}})
        if idx > 0:
            s["patches"][idx] = mid
    return series


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--epoch")
    src.add_argument("--mbox")
    ap.add_argument("--check", action="store_true", help="exit 1 on any disagreement not --known")
    ap.add_argument("--known", action="append", default=[], metavar="MSGID",
                    help="a disagreement documented in docs/intake.md (patchline judged right)")
    ap.add_argument("--threads", type=int, default=150)
    ap.add_argument("--b4-python", default="/tmp/b4venv/bin/python")
    ap.add_argument("--patchline", default=os.path.join(HERE, "..", "target", "debug", "patchline"))
    ap.add_argument("--keep", help="keep the work directory here")
    args = ap.parse_args()

    if args.epoch:
        mails = read_epoch(args.epoch)
    else:
        mails = [m.as_bytes() for m in mailbox.mbox(args.mbox)]
    by_id, threads = threads_of(mails)
    roots = [r for r in threads if is_patch_thread(by_id, r)]
    step = max(1, len(roots) // args.threads)
    sample = roots[::step]
    print(f"{len(mails)} mails, {len(threads)} threads, {len(roots)} patch threads; "
          f"comparing {len(sample)} (every {step}th)")

    work = args.keep or tempfile.mkdtemp(prefix="patchline-b4-")
    os.makedirs(work, exist_ok=True)
    all_box = os.path.join(work, "sample.mbox")
    if os.path.exists(all_box):
        os.remove(all_box)
    big = mailbox.mbox(all_box)
    per_thread = {}
    for i, root in enumerate(sample):
        path = os.path.join(work, f"thread-{i}.mbox")
        if os.path.exists(path):
            os.remove(path)
        box = mailbox.mbox(path)
        for mid in threads[root]:
            raw = by_id[mid][0]
            box.add(raw)
            big.add(raw)
        box.flush()
        per_thread[root] = path
    big.flush()

    b4 = b4_series(args.b4_python, per_thread)
    ours = patchline_series(args.patchline, work, all_box)
    member_of = {}
    for sid, s in ours.items():
        for mid in s["patches"].values():
            member_of.setdefault(mid, set()).add(sid)

    counts = {"compared": 0, "grouping": 0, "version": 0, "total": 0, "complete": 0, "all": 0}
    disagreements = []
    no_b4 = 0
    for root in sample:
        theirs = b4.get(root)
        if theirs is None:
            no_b4 += 1
            continue
        counts["compared"] += 1
        ids = [m for m in theirs["patches"] if m]
        candidates = {}
        for mid in ids:
            for sid in member_of.get(mid, ()):
                candidates[sid] = candidates.get(sid, 0) + 1
        if not candidates:
            disagreements.append((root, "patchline has no series with b4's patches", theirs, None))
            continue
        sid = max(candidates, key=lambda k: (candidates[k], -k))
        s = ours[sid]
        mine = sorted(s["patches"].values())
        grouping = sorted(ids) == mine
        version = s["version"] == theirs["revision"]
        total = s["total"] == theirs["expected"]
        # Completeness is about the patches, not about versions: a series
        # superseded by a later version elsewhere in the sample (b4 looks
        # at one thread only) is complete when none of its patches is
        # missing.
        if s["state"] == "superseded":
            ours_complete = len(s["patches"]) == s["total"]
        else:
            ours_complete = s["state"] in ("complete", "applied", "applying", "failed")
        complete = ours_complete == theirs["complete"]
        for k, ok in (("grouping", grouping), ("version", version), ("total", total), ("complete", complete)):
            counts[k] += ok
        if grouping and version and total and complete:
            counts["all"] += 1
        else:
            what = [k for k, ok in (("grouping", grouping), ("version", version), ("total", total),
                                    ("completeness", complete)) if not ok]
            disagreements.append((root, ", ".join(what), theirs, s))
    n = counts["compared"] or 1
    print(f"b4 found a series in {counts['compared']} threads ({no_b4} without one: replies or non-series)")
    for k in ("grouping", "version", "total", "complete", "all"):
        print(f"  agree on {k:<9} {counts[k]:>4} / {counts['compared']} ({100 * counts[k] / n:.1f}%)")
    for root, what, theirs, s in disagreements:
        known = " (known: see docs/intake.md)" if root in args.known else ""
        print(f"- <{root}>: {what}{known}")
        print(f"    b4:        v{theirs['revision']} {len([m for m in theirs['patches'] if m])}/{theirs['expected']}"
              f" complete={theirs['complete']}")
        if s:
            print(f"    patchline: v{s['version']} {len(s['patches'])}/{s['total']} {s['state']}")
    if not args.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    unknown = [d for d in disagreements if d[0] not in args.known]
    if args.check and (unknown or counts["compared"] == 0):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
