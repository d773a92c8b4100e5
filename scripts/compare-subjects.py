#!/usr/bin/env python3
"""Run subject lines through `patchline parse --json` and b4's LoreSubject
and print where they agree and each disagreement.

b4 is the oracle for what the kernel's tooling reads in a subject; where
patchline reads differently on purpose, docs/intake.md (the grammar
section) says why.

    python3 -m venv /tmp/b4venv && /tmp/b4venv/bin/pip install b4
    cargo build -p patchline
    /tmp/b4venv/bin/python scripts/compare-subjects.py \
        [--subjects worker/tests/fixtures/subjects.txt] \
        [--patchline target/debug/patchline] [--config patchline.toml]

Every subject becomes one mail of an mbox with a small diff in its body, so
only the subject decides. Exit status: 0 when the run worked (whatever the
agreement), 2 when patchline or b4 could not be run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import b4
except ImportError:
    sys.exit("b4 is not importable: run this with the python of a venv where `pip install b4` ran")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

DIFF = """---
 a.c | 1 +
 1 file changed, 1 insertion(+)

diff --git a/a.c b/a.c
--- a/a.c
+++ b/a.c
@@ -0,0 +1 @@
+x
"""


def read_subjects(path):
    with open(path, encoding="utf-8") as f:
        return [
            line.rstrip("\n")
            for line in f
            if line.strip() and not line.startswith("# ")
        ]


def mbox_of(subjects):
    mails = []
    for i, subject in enumerate(subjects):
        mails.append(
            "From patchline-compare Thu Jan  1 00:00:00 1970\n"
            "From: A U Thor <author@example.org>\n"
            f"Message-ID: <compare-{i}@example.org>\n"
            f"Subject: {subject}\n"
            "Date: Thu, 1 Jan 1970 00:00:00 +0000\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "\n"
            "Body.\n" + DIFF + "\n"
        )
    return "".join(mails)


def patchline_views(binary, config, subjects):
    with tempfile.TemporaryDirectory() as tmp:
        mbox = os.path.join(tmp, "subjects.mbox")
        with open(mbox, "w", encoding="utf-8") as f:
            f.write(mbox_of(subjects))
        cmd = [binary]
        if config:
            cmd += ["--config", config]
        cmd += ["parse", "--json", mbox]
        ran = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if ran.returncode not in (0, 1):
            sys.exit(f"{' '.join(cmd)} (in {tmp}) exited {ran.returncode}\n"
                     f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}")
        views = [json.loads(line) for line in ran.stdout.splitlines() if line.strip()]
    if len(views) != len(subjects):
        sys.exit(f"patchline printed {len(views)} results for {len(subjects)} subjects")
    return views


def ours(view):
    kind = view.get("kind")
    patch = kind in ("patch", "cover")
    index, total = view.get("index"), view.get("total")
    return {
        "reply": kind == "reply",
        "patch": patch,
        "revision": view.get("version") if patch else None,
        "counter": (index if index is not None else 1) if patch else None,
        "expected": (total if total is not None else (1 if index is None else None)) if patch else None,
        "title": view.get("title") if patch else None,
    }


def theirs(subject):
    s = b4.LoreSubject(subject)
    patch = s.patch and not s.reply
    return {
        "reply": s.reply,
        "patch": patch,
        "revision": s.revision if patch else None,
        "counter": s.counter if patch else None,
        "expected": s.expected if patch else None,
        "title": s.subject if patch else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", default=os.path.join(ROOT, "worker/tests/fixtures/subjects.txt"))
    ap.add_argument("--patchline", default=os.environ.get(
        "PATCHLINE_BIN", os.path.join(ROOT, "target/debug/patchline")))
    ap.add_argument("--config", help="a patchline.toml (its branches decide the team form)")
    args = ap.parse_args()
    subjects = read_subjects(args.subjects)
    views = patchline_views(os.path.abspath(args.patchline),
                            args.config and os.path.abspath(args.config), subjects)
    agree = 0
    disagreements = []
    for subject, view in zip(subjects, views):
        a, b = ours(view), theirs(subject)
        diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        if diff:
            disagreements.append((subject, view.get("kind"), diff))
        else:
            agree += 1
    print(f"b4 {b4.__VERSION__}: {agree} of {len(subjects)} subjects read alike, "
          f"{len(disagreements)} differ")
    for subject, kind, diff in disagreements:
        fields = ", ".join(f"{k}: patchline={p!r} b4={q!r}" for k, (p, q) in diff.items())
        print(f"- {subject!r} (patchline kind {kind}): {fields}")


if __name__ == "__main__":
    main()
