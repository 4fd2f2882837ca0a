"""A REAPI client that is not gvbuild: BuildGrid's own generated stubs build an action by hand,
upload it, Execute it, and print the ExecuteResponse as JSON (with the bytes of each output file,
and of stdout and stderr, read back from the CAS).

Usage: python reapi_execute.py HOST:PORT INSTANCE SPEC.json
SPEC: {"arguments": [...], "env": {...}, "output_paths": [...], "output_files": [...],
       "output_directories": [...], "working_directory": "", "timeout": SECONDS,
       "platform": {"name": "value"}, "files": {"path": ["text", executable]},
       "symlinks": {"path": "target"}, "dirs": ["empty/folder"],
       "raw_root": [{"name": "..", "text": "x"}]   # a root Directory with these files, unchecked
       "skip_upload": ["path"]   # files whose blob is not uploaded}
"""
import hashlib, json, sys, time

import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from buildgrid._protos.google.rpc import error_details_pb2
from google.protobuf import json_format


def digest(data: bytes) -> re.Digest:
    return re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def main():
    addr, instance, spec_path = sys.argv[1:4]
    spec = json.load(open(spec_path))
    channel = grpc.insecure_channel(addr)
    cas = re_grpc.ContentAddressableStorageStub(channel)
    blobs = {}

    def put(data: bytes) -> re.Digest:
        d = digest(data)
        blobs[d.hash] = data
        return d

    skip = set(spec.get("skip_upload", []))
    skipped = []

    # The input root, from nested dicts: name -> bytes/("link", target)/dict.
    tree = {}
    def node(path):
        parts = path.split("/")
        at = tree
        for p in parts[:-1]:
            at = at.setdefault(p, {})
        return at, parts[-1]
    for path, (text, exe) in spec.get("files", {}).items():
        at, name = node(path)
        at[name] = ("file", text.encode(), exe, path in skip)
    for path, target in spec.get("symlinks", {}).items():
        at, name = node(path)
        at[name] = ("link", target)
    for path in spec.get("dirs", []):
        at, name = node(path)
        at.setdefault(name, {})

    def encode(folder) -> re.Digest:
        d = re.Directory()
        for name in sorted(folder):
            v = folder[name]
            if isinstance(v, dict):
                d.directories.add(name=name, digest=encode(v))
            elif v[0] == "file":
                if v[3]:
                    fd = digest(v[1])
                    skipped.append(f"blobs/{fd.hash}/{fd.size_bytes}")
                else:
                    fd = put(v[1])
                d.files.add(name=name, digest=fd, is_executable=v[2])
            else:
                d.symlinks.add(name=name, target=v[1])
        return put(d.SerializeToString())

    if "raw_root" in spec:
        d = re.Directory()
        for f in spec["raw_root"]:
            d.files.add(name=f["name"], digest=put(f["text"].encode()))
        root = put(d.SerializeToString())
    else:
        root = encode(tree)

    cmd = re.Command(
        arguments=spec["arguments"],
        output_paths=spec.get("output_paths", []),
        output_files=spec.get("output_files", []),
        output_directories=spec.get("output_directories", []),
        working_directory=spec.get("working_directory", ""),
    )
    for k, v in sorted(spec.get("env", {}).items()):
        cmd.environment_variables.add(name=k, value=v)
    platform = re.Platform()
    for k, v in sorted(spec.get("platform", {}).items()):
        platform.properties.add(name=k, value=v)
    action = re.Action(command_digest=put(cmd.SerializeToString()), input_root_digest=root, do_not_cache=True)
    action.platform.CopyFrom(platform)
    if spec.get("timeout"):
        action.timeout.seconds = int(spec["timeout"])
    action_digest = put(action.SerializeToString())

    req = re.BatchUpdateBlobsRequest(instance_name=instance)
    for h, data in blobs.items():
        req.requests.add(digest=digest(data), data=data)
    for r in cas.BatchUpdateBlobs(req, timeout=30).responses:
        assert r.status.code == 0, r

    stages = []
    op = None
    for op in re_grpc.ExecutionStub(channel).Execute(
        re.ExecuteRequest(instance_name=instance, action_digest=action_digest, skip_cache_lookup=True),
        timeout=float(spec.get("client_timeout", 120)),
    ):
        md = re.ExecuteOperationMetadata()
        op.metadata.Unpack(md)
        stages.append(re.ExecutionStage.Value.Name(md.stage))
    resp = re.ExecuteResponse()
    op.response.Unpack(resp)

    def read(d):
        if d.size_bytes == 0:
            return ""
        r = cas.BatchReadBlobs(re.BatchReadBlobsRequest(instance_name=instance, digests=[d]), timeout=30).responses[0]
        assert r.status.code == 0, r
        return r.data.decode(errors="replace")

    out = json_format.MessageToDict(resp, preserving_proto_field_name=True)
    out["stages"] = stages
    out["skipped"] = skipped
    out["stdout"] = read(resp.result.stdout_digest)
    out["stderr"] = read(resp.result.stderr_digest)
    out["files"] = {f.path: read(f.digest) for f in resp.result.output_files}
    trees = {}
    for o in resp.result.output_directories:
        t = re.Tree()
        t.ParseFromString(read_bytes(cas, instance, o.tree_digest))
        trees[o.path] = json_format.MessageToDict(t, preserving_proto_field_name=True)
        # Every file of the folder, by its path in it, with its bytes.
        children = {digest(c.SerializeToString()).hash: c for c in t.children}
        contents = {}
        def walk(d, prefix):
            for f in d.files:
                contents[prefix + f.name] = read(f.digest) + (" (exec)" if f.is_executable else "")
            for l in d.symlinks:
                contents[prefix + l.name] = "-> " + l.target
            for s in d.directories:
                contents[prefix + s.name + "/"] = "/"
                walk(children[s.digest.hash], prefix + s.name + "/")
        walk(t.root, "")
        trees[o.path]["contents"] = contents
    out["trees"] = trees
    details = []
    for a in resp.status.details:
        pf = error_details_pb2.PreconditionFailure()
        if a.Unpack(pf):
            details.append([[v.type, v.subject] for v in pf.violations])
    out["violations"] = details
    print(json.dumps(out, indent=1, sort_keys=True))


def read_bytes(cas, instance, d):
    r = cas.BatchReadBlobs(re.BatchReadBlobsRequest(instance_name=instance, digests=[d]), timeout=30).responses[0]
    assert r.status.code == 0, r
    return r.data


if __name__ == "__main__":
    main()
