#!/usr/bin/env bash
# `make test-compat`: the model and generation tests at both ends of the transformers range in settings.ini.
# Each end gets its own environment (.venv-compat-oldest, .venv-compat-newest): requirements.lock first, then
# transformers moved to that end (pip changes only what it must, never torch), then notebooks 07 (model) and 21 (generate) and
# tests/test_generate.py. Prints one line per end and exits non-zero if either fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
range=$(python3 -c "
import configparser, re, shlex
c = configparser.ConfigParser(delimiters=['=']); c.read('settings.ini')
print(next(r for r in shlex.split(c['DEFAULT']['requirements']) if re.match(r'transformers\b', r))[len('transformers'):])")
oldest=$(sed -n 's/^>=\([0-9.]*\).*/\1/p' <<<"$range")
[ -n "$oldest" ] || { echo "test-compat: settings.ini's transformers range '$range' has no lower bound (>=X): state one"; exit 2; }
torch_pin=$(grep -E '^torch==' requirements.lock)
status=0; summary=()
for end in oldest newest; do
  env=.venv-compat-$end
  want=$([ "$end" = oldest ] && echo "transformers==$oldest" || echo "transformers$range")
  echo "== $end: $want in $env"
  test -x $env/bin/python || python3 -m venv $env
  $env/bin/pip install -q -r requirements.lock 2>&1 | grep -v "^WARNING: Location"
  $env/bin/pip install -q --no-deps --no-build-isolation -e . >/dev/null
  $env/bin/pip install -q --upgrade "$want" "$torch_pin" 2>&1 | grep -v "^WARNING: Location"
  got=$($env/bin/python -c "import transformers; print(transformers.__version__)")
  log=$env/compat.log
  if IN_TEST=1 $env/bin/nbdev_test --n_workers 2 --path nbs/07_model.ipynb >"$log" 2>&1 \
     && IN_TEST=1 $env/bin/nbdev_test --n_workers 2 --path nbs/21_generate.ipynb >>"$log" 2>&1 \
     && $env/bin/python -m pytest -q -p no:cacheprovider tests/test_generate.py >>"$log" 2>&1; then
    summary+=("transformers $got ($end allowed by '$range'): passed ($(grep -Eo '[0-9]+ passed[^=]*' "$log" | tail -1))")
  else
    status=1; summary+=("transformers $got ($end allowed by '$range'): FAILED, see $log")
    tail -20 "$log"
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
