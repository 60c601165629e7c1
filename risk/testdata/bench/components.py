#!/usr/bin/env python3
"""Writes components.txt.gz: the component lists of the 200 device models of
the risk assess benchmark (risk/assess_bench_test.go), from the go.mod history
of two real products. Run from a clone of each (see README.md):

    python3 components.py TRIVY_CLONE GRYPE_CLONE > /dev/null

A model is the firmware image of one date: the Go modules that trivy's go.mod
requires at one of its commits, then those grype's go.mod required at that
date that are not already listed (module and version), 500 in all."""
import gzip, re, subprocess, sys

def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout

def requires(repo, commit):
    out, block = [], False
    for line in git(repo, "show", f"{commit}:go.mod").splitlines():
        s = line.split("//")[0].strip()
        if re.match(r"^require\s*\($", s):
            block = True
            continue
        if block and s == ")":
            block = False
            continue
        f = s.split()
        if block and len(f) >= 2 and f[1].startswith("v"):
            out.append((f[0], f[1]))
        elif not block and len(f) >= 3 and f[0] == "require" and f[2].startswith("v"):
            out.append((f[1], f[2]))
    return out

def history(repo):
    # first-parent history of go.mod, oldest first: (commit, ISO date)
    lines = git(repo, "log", "--first-parent", "--format=%H %cI", "HEAD", "--", "go.mod").split("\n")
    return [tuple(l.split()) for l in reversed(lines) if l]

trivy, grype = sys.argv[1], sys.argv[2]
N, SIZE, SINCE = 200, 500, "2022-07-01"
th = [c for c in history(trivy) if c[1] >= SINCE]
gh = history(grype)
cands, seen = [], set()
for tc, td in th:
    gc, gd = max((c for c in gh if c[1] <= td), key=lambda c: c[1])
    comps, keys = [], set()
    for m, v in requires(trivy, tc) + requires(grype, gc):
        if (m, v) not in keys:
            keys.add((m, v))
            comps.append((m, v))
    if len(comps) < SIZE or tuple(comps[:SIZE]) in seen:
        continue
    seen.add(tuple(comps[:SIZE]))
    cands.append((tc, td, gc, gd, comps[:SIZE]))
# N of them, evenly spaced over the history
models = [cands[int(k * len(cands) / N)] for k in range(N)] if len(cands) >= N else cands
if len(models) < N:
    sys.exit(f"only {len(models)} distinct models of {SIZE} components")
with gzip.GzipFile("components.txt.gz", "wb", mtime=0) as f:
    for k, (tc, td, gc, gd, comps) in enumerate(models):
        f.write(f"# model {k:03d}: aquasecurity/trivy {tc} {td[:10]} + anchore/grype {gc} {gd[:10]}\n".encode())
        for m, v in comps:
            f.write(f"{m} {v}\n".encode())
print(len(models), "models", file=sys.stderr)
