#!/usr/bin/env bash
# patchline's main job on embedded defaults: installs what is missing, builds
# patchline, generates a demo mailing list (real `git format-patch` output) and
# a demo git repository under examples/demo-work/, then runs the pipeline.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bash scripts/setup.sh
cargo build --quiet --bin patchline
bin="$root/target/debug/patchline"

# PATCHLINE_DEMO_WORK: generate elsewhere (the Jenkins harness uses a copy
# of examples/demo/ next to its own work dir); --prepare-only: stop before
# running the pipeline.
work="${PATCHLINE_DEMO_WORK:-$root/examples/demo-work}"
rm -rf "$work"
mkdir -p "$work/repos" "$work/src" "$work/mail"
export GIT_AUTHOR_NAME="Demo Maintainer" GIT_AUTHOR_EMAIL="maintainer@example.org"
export GIT_COMMITTER_NAME="Demo Maintainer" GIT_COMMITTER_EMAIL="maintainer@example.org"
export GIT_AUTHOR_DATE="2026-11-24T09:00:00Z" GIT_COMMITTER_DATE="2026-11-24T09:00:00Z"
g() { git -C "$work/src/hello" -c init.defaultBranch=master -c commit.gpgsign=false "$@"; }

# The upstream repository: master and a stable branch.
mkdir -p "$work/src/hello"
cp -r examples/demo/hello/. "$work/src/hello/"
g init -q
g add -A
g commit -q -m "hello 1.0"
g branch stable-1.0
git clone -q --bare "$work/src/hello" "$work/repos/hello.git"
git -C "$work/repos/hello.git" branch -q stable-1.0 master 2>/dev/null || true

# A contributor's three-patch series with a cover letter, in the team's form.
g checkout -q -b feature master
sed -i 's/hello from/hello, world, from/' "$work/src/hello/hello.c"
g commit -q -am "hello: greet the world" -m "Say hello to the whole world." -m "Signed-off-by: Ada Contributor <ada@example.org>"
printf '\nUsage: hello\n' >> "$work/src/hello/README"
g commit -q -am "README: document usage" -m "Signed-off-by: Ada Contributor <ada@example.org>"
sed -i 's/-O2 -g/-O2 -g -Wall/' "$work/src/hello/Makefile"
g commit -q -am "Makefile: build with -Wall" -m "Signed-off-by: Ada Contributor <ada@example.org>"
g format-patch -q --cover-letter --thread=shallow --subject-prefix="master PATCH hello" \
  --from="Ada Contributor <ada@example.org>" -o "$work/mail/series" master..feature
sed -i 's/\*\*\* SUBJECT HERE \*\*\*/Greet the world/; s/\*\*\* BLURB HERE \*\*\*/Three small improvements./' \
  "$work/mail/series/0000-cover-letter.patch"

# A single fix for the stable branch, and an ordinary [PATCH] routed to the
# only repository.
g checkout -q -b fix stable-1.0
printf 'hello: the demo package patchline builds (stable).\n' > "$work/src/hello/README"
g commit -q -am "README: mention the stable branch" -m "Signed-off-by: Bob Fixer <bob@example.org>"
g format-patch -q --subject-prefix="stable-1.0 PATCH hello" --from="Bob Fixer <bob@example.org>" \
  -o "$work/mail/stable" stable-1.0..fix
g checkout -q -b plain master
printf 'Demo Maintainer <maintainer@example.org>\n' > "$work/src/hello/AUTHORS"
g add AUTHORS
g commit -q -m "AUTHORS: list the maintainer" -m "Signed-off-by: Eve Plain <eve@example.org>"
g format-patch -q --from="Eve Plain <eve@example.org>" -o "$work/mail/plain" master..plain

# A series whose first patch has not arrived yet: held as incomplete.
g checkout -q -b partial master
for n in 1 2 3; do echo "line $n" >> "$work/src/hello/README"; g commit -q -am "README: line $n"; done
# (Its own committer identity: format-patch derives cover letter Message-IDs
# from the time and the committer, and both series are made in one second.)
GIT_COMMITTER_EMAIL=carol@example.org g format-patch -q --cover-letter --thread=shallow -v2 --from="Carol Late <carol@example.org>" \
  -o "$work/mail/partial" master..partial
sed -i 's/\*\*\* SUBJECT HERE \*\*\*/More README lines/' "$work/mail/partial/v2-0000-cover-letter.patch"

{
  cat "$work"/mail/series/*.patch
  cat "$work"/mail/stable/*.patch
  cat "$work"/mail/plain/*.patch
  cat "$work"/mail/partial/v2-0000-cover-letter.patch "$work"/mail/partial/v2-0003-*.patch
  cat <<'MAIL'
From nobody Tue Nov 24 10:00:00 2026
From: Dan Discussion <dan@example.org>
To: hello-devel@example.org
Subject: Release plans for hello 1.1
Date: Tue, 24 Nov 2026 10:00:00 +0000
Message-Id: <release-plans@example.org>

Shall we release 1.1 after the world greeting lands?

MAIL
  sed -n 's/^Message-I[Dd]: <\(.*\)>$/\1/p' "$work"/mail/series/0001-*.patch | head -1 | {
    read -r id
    cat <<MAIL
From nobody Tue Nov 24 11:00:00 2026
From: Reviewer <rev@example.org>
To: hello-devel@example.org
Subject: Re: [master PATCH hello 1/3] hello: greet the world
Date: Tue, 24 Nov 2026 11:00:00 +0000
Message-Id: <review-1@example.org>
In-Reply-To: <$id>
References: <$id>

Reviewed-by: Reviewer <rev@example.org>

MAIL
  }
} > "$work/list.mbox"

echo "demo: mailing list with $(grep -c '^From ' "$work/list.mbox") mails in $work/list.mbox" >&2
[ "${1:-}" = "--prepare-only" ] && exit 0
"$bin" --config examples/demo/patchline.toml run
echo >&2
echo "demo: archive in $work/archive, state in $work/patchline.db" >&2
"$bin" --config examples/demo/patchline.toml status
