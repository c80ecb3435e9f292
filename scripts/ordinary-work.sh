#!/usr/bin/env bash
# Ordinary host work for the `make run` 0-alert figure (issue 22, BENCHMARKS.md "Stop 32"):
# run beside `make run` for $1 seconds (default 600), then count alerts with
# `target/release/procflow query --token-file .procflow/token --kind alert --since 1h`.
# It reinstalls bash and less with apt-get once (a package upgrade): run it as root on a
# machine where that is acceptable.
set -u
end=$(( $(date +%s) + ${1:-600} ))
work=$(mktemp -d /tmp/ordwork.XXXX)
# A pyenv-style version shim: a bash script that execs the real interpreter.
mkdir -p "$work/shims" && cat > "$work/shims/python3" <<'SH'
#!/usr/bin/env bash
exec /usr/bin/python3.11 "$@"
SH
chmod +x "$work/shims/python3"
cd "$work" && git init -q repo && cd repo && git config user.email a@b && git config user.name a
i=0
upgraded=0
while [ "$(date +%s)" -lt "$end" ]; do
  i=$((i+1))
  sh -c 'ls /usr/bin | wc -l >/dev/null; echo hi | awk "{print \$1}" >/dev/null'
  bash -c 'for f in /etc/*.conf; do head -1 "$f" >/dev/null 2>&1; done'
  "$work/shims/python3" -c 'import json,sys; json.dumps({"a": 1})'
  PATH="$work/shims:$PATH" python3 -c 'print(1)' >/dev/null
  python3 -m venv "$work/venv$i" >/dev/null 2>&1 && rm -rf "$work/venv$i"
  echo "$i" > f.txt && git add f.txt && git commit -qm "c$i" && git log --oneline | wc -l >/dev/null
  find /usr/share/doc -maxdepth 1 -name 'lib*' | sort | uniq | head -3 >/dev/null
  env LANG=C date >/dev/null; xargs -n1 echo </dev/null
  perl -e 'print 1' >/dev/null; grep -c root /etc/passwd >/dev/null; sed -n 1p /etc/hostname >/dev/null
  # A build in a mktemp dir: cargo (build script, run, test) and a make that links and runs its test.
  if [ $((i % 6)) -eq 1 ]; then
    ( cd "$work" && rm -rf demo && cargo new -q --vcs none demo && cd demo \
      && printf 'fn main(){println!("cargo:rerun-if-changed=build.rs");}\n' > build.rs \
      && printf '#[test]\nfn t(){assert_eq!(1,1);}\n' >> src/main.rs \
      && nice cargo build -q && nice cargo run -q >/dev/null && nice cargo test -q >/dev/null 2>&1 )
    ( cd "$work" && mkdir -p mk && cd mk && printf 'int main(){return 0;}\n' > t.c \
      && printf 'check: t\n\t./t\nt: t.c\n\tcc -o t t.c\n' > Makefile && make -s check && rm -f t )
  fi
  if [ "$upgraded" = 0 ] && [ "$i" -ge 8 ]; then
    upgraded=1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall less bash >/dev/null 2>&1; echo "reinstalled at $(date -u +%T)"
  fi
  sleep 15
done
rm -rf "$work"
echo "ordinary work: $i rounds"
