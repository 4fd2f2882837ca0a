#!/usr/bin/env python3
"""A second, independent TFS v5 reader, for cross-checking gvbuild's writer.

It follows Nanos's tlog.c and tuple.c (0.1.51) and shares no code with gvbuild's Rust reader, so a
mistake made the same way on both sides of gvbuild's own round trip still shows up here.

Usage: tfs_decode.py IMAGE
Reads the MBR; for each partition holding TFS (or a bare volume at byte 0), prints JSON: the
header, the root tuple without `children`, and the tree with each file's sha256.
"""
import hashlib, json, struct, sys

SECTOR = 512
END_OF_LOG, TUPLE_AVAILABLE, TUPLE_EXTENDED, END_OF_SEGMENT, LINK = 1, 2, 3, 4, 5
T_BUFFER, T_TUPLE, T_VECTOR, T_INTEGER, T_STRING = 0, 1, 2, 3, 4
NULL = "<null>"


class Cur:
    def __init__(self, b, pos=0):
        self.b, self.pos = b, pos

    def u8(self):
        v = self.b[self.pos]
        self.pos += 1
        return v

    def take(self, n):
        v = self.b[self.pos:self.pos + n]
        if len(v) != n:
            raise ValueError("short read")
        self.pos += n
        return v

    def varint(self):
        v = 0
        while True:
            a = self.u8()
            v = (v << 7) | (a & 0x7F)
            if not a & 0x80:
                return v

    def header(self):
        a = self.u8()
        imm, typ, ln = a >> 7, (a >> 4) & 7, a & 7
        if a & 0x08:
            while True:
                c = self.u8()
                ln = (ln << 7) | (c & 0x7F)
                if not c & 0x80:
                    break
        return imm, typ, ln


class Log:
    def __init__(self):
        self.dict = {}

    def record(self, x):
        self.dict[len(self.dict) + 1] = x

    def value(self, c):
        imm, typ, ln = c.header()
        if typ == T_TUPLE:
            if imm:
                t = {}
                self.record(t)
            else:
                t = self.dict[c.varint()]
            for _ in range(ln):
                nimm, _, nlen = c.header()
                if nimm:
                    k = c.take(nlen).decode()
                    self.record(("sym", k))
                else:
                    k = self.dict[nlen][1]
                v = self.value(c)
                if v is None:
                    t.pop(k, None)
                else:
                    t[k] = v
            return t
        if typ == T_VECTOR:
            v = []
            if imm:
                self.record(v)
            else:
                v = self.dict[c.varint()]
            for i in range(ln):
                x = self.value(c)
                if i < len(v):
                    v[i] = x
                else:
                    v.append(x)
            return v
        if typ == T_INTEGER:
            n = c.varint()
            return -n if ln else n
        if typ in (T_STRING, T_BUFFER):
            if ln == 0:
                return None
            raw = c.take(ln)
            if typ == T_BUFFER and raw == b"\0":
                return NULL
            return raw.decode()
        raise ValueError("unknown type %d" % typ)


def read_volume(img, base):
    log = Log()
    start, length, info = 0, 1, {}
    staging, remain = b"", 0
    while True:
        c = Cur(img, base + start * SECTOR)
        if c.take(6) != b"NVMTFS":
            raise ValueError("no magic at sector %d" % start)
        info["version"] = c.varint() if start == 0 else info["version"]
        if start != 0:
            c.varint()
        if c.varint() != length:
            raise ValueError("extension length")
        if start == 0:
            u = c.take(16).hex()
            info["uuid"] = "-".join([u[:8], u[8:12], u[12:16], u[16:20], u[20:]])
            label = bytearray()
            while (ch := c.u8()) != 0:
                label.append(ch)
            info["label"] = label.decode()
        nxt = None
        while True:
            f = c.u8()
            if f == END_OF_LOG:
                break
            if f == END_OF_SEGMENT:
                continue
            if f == LINK:
                nxt = (c.varint(), c.varint())
                break
            if f == TUPLE_AVAILABLE:
                total, part = c.varint(), c.varint()
                if part == total:
                    log.value(Cur(c.take(part)))
                else:
                    staging, remain = c.take(part), total - part
            elif f == TUPLE_EXTENDED:
                part = c.varint()
                staging += c.take(part)
                remain -= part
                if remain == 0:
                    log.value(Cur(staging))
                    staging = b""
            else:
                raise ValueError("unknown record %d" % f)
        if nxt is None:
            break
        start, length = nxt
    return info, log.dict[1]


def file_bytes(img, base, node):
    data = bytearray()
    for at, e in sorted(node.get("extents", {}).items(), key=lambda kv: int(kv[0])):
        if int(at) * SECTOR != len(data):
            raise ValueError("a gap between extents")
        data += img[base + e["offset"] * SECTOR: base + (e["offset"] + e["length"]) * SECTOR]
    return bytes(data[: node.get("filelength", 0)])


def walk(img, base, node, path, out):
    for name, n in sorted(node.get("children", {}).items()):
        p = path + "/" + name
        if "linktarget" in n:
            out.append({"path": p, "kind": "symlink", "target": n["linktarget"]})
        elif "children" in n:
            out.append({"path": p, "kind": "dir"})
            walk(img, base, n, p, out)
        else:
            data = file_bytes(img, base, n)
            out.append({"path": p, "kind": "file", "size": len(data), "exec": n.get("exec") == "t",
                        "sha256": hashlib.sha256(data).hexdigest()})
    return out


def main():
    img = open(sys.argv[1], "rb").read()
    bases = []
    if img[:6] == b"NVMTFS":
        bases.append(0)
    elif img[510:512] == b"\x55\xaa":
        for i in range(4):
            e = img[0x1BE + 16 * i: 0x1BE + 16 * (i + 1)]
            lba, sectors = struct.unpack("<II", e[8:16])
            if e[4] == 0x83 and sectors and img[lba * SECTOR: lba * SECTOR + 6] == b"NVMTFS":
                bases.append(lba * SECTOR)
    volumes = []
    for base in bases:
        info, root = read_volume(img, base)
        info["root_tuple"] = {k: v for k, v in root.items() if k != "children"}
        info["tree"] = walk(img, base, root, "", [])
        volumes.append(info)
    json.dump(volumes, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
