"""Check a Bazel HTTP cache folder as bazel-remote would, with REAPI's own protos (BuildGrid's).

usage: reapi_check.py CACHE_DIR ACCESS_LOG URL_PATH

- every cas/ file is named by the SHA-256 of its bytes;
- every ac/ file decodes as an ActionResult whose digests (output files, each output folder's
  Tree and the files and folders in it, stdout/stderr) name blobs present in cas/ with that size;
- in nginx's access log, each successful PUT of an ac/ entry comes after the blobs it names were
  PUT (or found by HEAD).
Prints "ok: N entries, M blobs" or the problems, one a line, and exits 1.
"""
import hashlib
import os
import sys

try:
    from build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
except ImportError:
    from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

cache, log, url_path = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")
problems = []
cas = {}
cas_dir = os.path.join(cache, "cas")
for name in sorted(os.listdir(cas_dir)) if os.path.isdir(cas_dir) else []:
    data = open(os.path.join(cas_dir, name), "rb").read()
    cas[name] = data
    if hashlib.sha256(data).hexdigest() != name:
        problems.append("cas/%s is not named by the SHA-256 of its bytes" % name)


def need(digest, what, names):
    if not digest.hash:
        return
    names.add(digest.hash)
    if digest.hash not in cas:
        problems.append("%s names blob %s, which is not in cas/" % (what, digest.hash))
    elif len(cas[digest.hash]) != digest.size_bytes:
        problems.append("%s gives blob %s size %d, not %d" % (what, digest.hash, digest.size_bytes, len(cas[digest.hash])))


named_by = {}
ac_dir = os.path.join(cache, "ac")
entries = sorted(os.listdir(ac_dir)) if os.path.isdir(ac_dir) else []
for key in entries:
    what = "ac/" + key
    ar = re_pb2.ActionResult()
    try:
        ar.ParseFromString(open(os.path.join(ac_dir, key), "rb").read())
    except Exception as e:  # noqa: BLE001
        problems.append("%s is not an ActionResult: %s" % (what, e))
        continue
    names = set()
    for f in ar.output_files:
        need(f.digest, what + " " + f.path, names)
    for d in ar.output_directories:
        need(d.tree_digest, what + " " + d.path + " (tree)", names)
        if d.tree_digest.hash in cas:
            tree = re_pb2.Tree()
            tree.ParseFromString(cas[d.tree_digest.hash])
            children = {hashlib.sha256(c.SerializeToString()).hexdigest() for c in tree.children}
            for directory in [tree.root] + list(tree.children):
                for fn in directory.files:
                    need(fn.digest, what + " " + d.path + "/.../" + fn.name, names)
                for dn in directory.directories:
                    if dn.digest.hash not in children:
                        problems.append("%s: the tree of %s lacks folder %s" % (what, d.path, dn.name))
    if ar.HasField("stdout_digest"):
        need(ar.stdout_digest, what + " stdout", names)
    if ar.HasField("stderr_digest"):
        need(ar.stderr_digest, what + " stderr", names)
    named_by[key] = names

# Upload order, from nginx's access log: "METHOD PATH HTTP/1.1" STATUS
seen = set()
for line in open(log):
    try:
        request = line.split('"')[1]
        status = int(line.split('"')[2].split()[0])
        method, path, _ = request.split()
    except (IndexError, ValueError):
        continue
    if not path.startswith(url_path + "/"):
        continue
    kind, _, name = path[len(url_path) + 1:].partition("/")
    ok = 200 <= status < 300
    if kind == "cas" and ok and method in ("PUT", "HEAD"):
        seen.add(name)
    if kind == "ac" and ok and method == "PUT":
        for blob in named_by.get(name, ()):
            if blob not in seen:
                problems.append("ac/%s was uploaded before blob %s that it names" % (name, blob))

if problems:
    print("\n".join(problems))
    sys.exit(1)
print("ok: %d entries, %d blobs" % (len(entries), len(cas)))
