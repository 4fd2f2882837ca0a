//! The few REAPI messages the shared cache speaks (build.bazel.remote.execution.v2), written by
//! hand with prost's derive and the field numbers of REAPI's `remote_execution.proto`, so that
//! the build needs no protoc and no generated code. Fields gvbuild never sets or reads
//! (`node_properties`, `execution_metadata`, the deprecated symlink lists) are left out: prost
//! skips unknown fields when decoding, and an entry written without them is still a valid
//! `ActionResult` for any reader.

/// A content digest: the lowercase hex SHA-256 of a blob and its size.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Digest {
    #[prost(string, tag = "1")]
    pub hash: String,
    #[prost(int64, tag = "2")]
    pub size_bytes: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ActionResult {
    #[prost(message, repeated, tag = "2")]
    pub output_files: Vec<OutputFile>,
    #[prost(message, repeated, tag = "3")]
    pub output_directories: Vec<OutputDirectory>,
    #[prost(int32, tag = "4")]
    pub exit_code: i32,
    #[prost(bytes = "vec", tag = "5")]
    pub stdout_raw: Vec<u8>,
    #[prost(message, optional, tag = "6")]
    pub stdout_digest: Option<Digest>,
    #[prost(bytes = "vec", tag = "7")]
    pub stderr_raw: Vec<u8>,
    #[prost(message, optional, tag = "8")]
    pub stderr_digest: Option<Digest>,
    #[prost(message, repeated, tag = "12")]
    pub output_symlinks: Vec<OutputSymlink>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OutputFile {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(message, optional, tag = "2")]
    pub digest: Option<Digest>,
    #[prost(bool, tag = "4")]
    pub is_executable: bool,
    /// Inlined contents (only in responses that asked for them; gvbuild never does).
    #[prost(bytes = "vec", tag = "5")]
    pub contents: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OutputSymlink {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(string, tag = "2")]
    pub target: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OutputDirectory {
    #[prost(string, tag = "1")]
    pub path: String,
    /// A [`Tree`] in the CAS.
    #[prost(message, optional, tag = "3")]
    pub tree_digest: Option<Digest>,
}

/// A folder and every folder below it, as one CAS blob.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tree {
    #[prost(message, optional, tag = "1")]
    pub root: Option<Directory>,
    #[prost(message, repeated, tag = "2")]
    pub children: Vec<Directory>,
}

/// One folder: its entries sorted by name, each kind in its own list.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Directory {
    #[prost(message, repeated, tag = "1")]
    pub files: Vec<FileNode>,
    #[prost(message, repeated, tag = "2")]
    pub directories: Vec<DirectoryNode>,
    #[prost(message, repeated, tag = "3")]
    pub symlinks: Vec<SymlinkNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileNode {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub digest: Option<Digest>,
    #[prost(bool, tag = "4")]
    pub is_executable: bool,
}

/// A sub-folder, by the digest of its encoded [`Directory`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct DirectoryNode {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub digest: Option<Digest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SymlinkNode {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub target: String,
}

/// A [`Tree`] read with its folders left encoded, so that each child's digest is taken over
/// the very bytes its writer hashed (re-encoding could drop fields this module does not know).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawTree {
    #[prost(bytes = "vec", tag = "1")]
    pub root: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub children: Vec<Vec<u8>>,
}
