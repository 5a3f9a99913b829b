"""Time ``Candidates.ranked(code)`` per code: the index by code (issue 24) against the former
scan of every ``(code, phrase)`` entry, at 5.8k and 290k candidates over 5.8k codes.

    PYTHONPATH=. python benchmarks/silver_ranked_cpu.py > benchmarks/silver_ranked_cpu.json
"""

import json
import os
import random
import time

from ccl.spans.silver import Candidates


def scan_ranked(c: Candidates, code: str):  # the code before issue 24
    rows = []
    for (k, key), n_docs in c.docs.items():
        if k == code:
            surface = min(c.surfaces[k, key].items(), key=lambda kv: (-kv[1], kv[0]))[0]
            rows.append((surface, key, n_docs, c.mentions[k, key]))
    return sorted(rows, key=lambda r: (-r[2], -r[3], r[1]))


def main():
    rng = random.Random(0)
    codes = [f"C{i:04d}" for i in range(5800)]
    out = {"load_average_start": os.getloadavg(), "rows": []}
    for per_code in (1, 50):
        c = Candidates()
        for i, code in enumerate(codes):
            c.add([code], {code: [f"phrase {i} {j}" for j in range(per_code)]})
        sample = rng.sample(codes, 50)
        row = {"candidates": len(c.docs), "codes": len(codes)}
        for name, fn in (("scan_ms_per_code", scan_ranked), ("index_ms_per_code", Candidates.ranked)):
            t = time.perf_counter()
            results = [fn(c, code) for code in sample]
            row[name] = round((time.perf_counter() - t) * 1000 / len(sample), 3)
        assert results == [scan_ranked(c, code) for code in sample]
        out["rows"].append(row)
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
