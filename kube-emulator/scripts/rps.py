#!/usr/bin/env python3
"""Requests per second of one emulator route over one keep-alive connection.

usage: rps.py BASE_URL PATH 'Header: value' [COUNT]
e.g.   rps.py http://127.0.0.1:18765 /repos/acme/app/actions/secrets/public-key 'Authorization: Bearer x'
"""
import http.client
import sys
import time
import urllib.parse

base, path, header = sys.argv[1], sys.argv[2], sys.argv[3]
count = int(sys.argv[4]) if len(sys.argv) > 4 else 5000
name, value = (s.strip() for s in header.split(":", 1))
url = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(url.hostname, url.port)


def get():
    conn.request("GET", path, headers={name: value})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        sys.exit(f"{path}: HTTP {resp.status}")


for _ in range(100):  # warm-up
    get()
start = time.perf_counter()
for _ in range(count):
    get()
elapsed = time.perf_counter() - start
print(f"{count} GET {path}: {count / elapsed:.0f} requests/s, {elapsed / count * 1e6:.0f} µs each")
