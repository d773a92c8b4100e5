#!/usr/bin/env python3
"""The follow-up trailers b4 takes from each reply of an mbox, as JSON.

b4's own rules (b4.LoreMessage: find_trailers on the reply's body, the
sender check of get_trailers) on every mail b4 calls a reply; the unit test
`mail::trailers::tests::real_replies_give_what_b4_takes` compares
patchline's extraction with this output, committed next to the mbox.

    .tools/b4-venv/bin/python scripts/b4-reply-trailers.py \
        worker/tests/fixtures/real/kvmarm-slice.mbox \
        > worker/tests/fixtures/real/kvmarm-slice.b4-trailers.json
"""
import email
import email.policy
import json
import mailbox
import sys

import b4


def main() -> None:
    out = []
    for msg in mailbox.mbox(sys.argv[1]):
        parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
        lmsg = b4.LoreMessage(parsed)
        if not lmsg.reply:
            continue
        taken, _mismatches = lmsg.get_trailers()
        out.append(
            {
                "message_id": lmsg.msgid,
                "trailers": [t.as_string(omit_extinfo=True) for t in taken],
            }
        )
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
