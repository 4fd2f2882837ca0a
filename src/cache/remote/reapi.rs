//! The REAPI v2 messages and gRPC clients the shared cache speaks, from `bazel-remote-apis`
//! (generated from REAPI's own protos, so field numbers cannot drift), re-exported here so that
//! generated code stays out of the other modules' way. One message is ours: [`RawTree`].

pub use bazel_remote_apis::build::bazel::remote::execution::v2::{
    action_cache_client::ActionCacheClient, batch_update_blobs_request,
    capabilities_client::CapabilitiesClient, command::EnvironmentVariable,
    content_addressable_storage_client::ContentAddressableStorageClient, digest_function,
    execution_client::ExecutionClient, platform, Action, ActionResult, BatchReadBlobsRequest,
    BatchUpdateBlobsRequest, Command, Digest, Directory, DirectoryNode, ExecuteRequest, ExecuteResponse,
    FileNode, FindMissingBlobsRequest, GetActionResultRequest, GetCapabilitiesRequest, OutputDirectory,
    OutputFile, OutputSymlink, Platform, ServerCapabilities, SymlinkNode, Tree, UpdateActionResultRequest,
    WaitExecutionRequest,
};
pub use bazel_remote_apis::build::bazel::remote::execution::v2::{execution_stage, ExecuteOperationMetadata};
pub use bazel_remote_apis::google::bytestream::{
    byte_stream_client::ByteStreamClient, ReadRequest, ReadResponse, WriteRequest,
};
pub use bazel_remote_apis::google::longrunning::{
    operation, operations_client::OperationsClient, CancelOperationRequest, Operation,
};

/// A [`Tree`] read with its folders left encoded, so that each child's digest is taken over
/// the very bytes its writer hashed (re-encoding could drop fields of a newer REAPI).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawTree {
    #[prost(bytes = "vec", tag = "1")]
    pub root: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub children: Vec<Vec<u8>>,
}

/// What the remote-execution worker (`crate::worker`) reads and writes besides the cache's
/// messages: the Action and Command it runs, the result's metadata, and the well-known
/// `google.protobuf` / `google.rpc` types the Remote Workers API wraps them in.
pub use bazel_remote_apis::build::bazel::remote::execution::v2::{
    platform::Property as PlatformProperty, ExecutedActionMetadata,
};
pub use bazel_remote_apis::google::protobuf::{Any, Duration as ProtoDuration, Timestamp};
pub use bazel_remote_apis::google::rpc::Status as RpcStatus;

/// The detail of a `FAILED_PRECONDITION` that names missing inputs (REAPI's convention: an
/// `ExecuteResponse.status` whose details hold one, with a `MISSING` violation per blob).
pub const PRECONDITION_FAILURE_TYPE: &str = "type.googleapis.com/google.rpc.PreconditionFailure";

/// `google.rpc.PreconditionFailure` (error_details.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreconditionFailure {
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<Violation>,
}

/// `google.rpc.PreconditionFailure.Violation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Violation {
    /// `MISSING` for a blob the CAS lacks.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// `blobs/HASH/SIZE`.
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub description: String,
}
