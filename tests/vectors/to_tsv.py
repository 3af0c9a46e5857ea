#!/usr/bin/env python3
"""Converts ../shared/vectors/k8s-vectors.json into a TSV that C tests read without a JSON
parser. One line per vector, tab-separated, every free-text field base64 so tabs cannot clash:

  id  provider  etcd_key_b64  group_resource  plaintext_b64  stored_b64  expected(ok|error)
  stale(0|1|-)  key_name_b64  key_b64  k8s_error_b64

Usage: to_tsv.py VECTORS_JSON > OUT.tsv
"""
import base64
import json
import sys


def b64(s):
    return base64.b64encode((s or "").encode()).decode()


def main():
    doc = json.load(open(sys.argv[1]))
    for v in doc["vectors"]:
        stale = v.get("stale")
        print("\t".join([
            v["id"], v["provider"], b64(v["etcd_key"]), v.get("group_resource", "-") or "-",
            v.get("plaintext_b64", "") or "", v["stored_b64"], v["expected"],
            "-" if stale is None else ("1" if stale else "0"),
            b64(v.get("key_name", "")), v.get("key_b64", "") or "", b64(v.get("k8s_error", "")),
        ]))


if __name__ == "__main__":
    main()
