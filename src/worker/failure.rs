//! Why a lease ends without its command's result: [`Failure`], the `google.rpc.Status` the
//! engine gets, shared by the lease and the input and output handling below it.

use std::io;

use prost::Message;
use tonic::Code;

use crate::cache::remote::reapi::{Any, Digest, RpcStatus};
use crate::cache::remote::reapi::{PreconditionFailure, Violation, PRECONDITION_FAILURE_TYPE};
use crate::cache::remote::RemoteError;

/// Why a lease ends without its command's result, as the status the engine gets.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    pub details: Vec<Any>,
}

impl Failure {
    pub fn invalid(message: String) -> Failure {
        Failure { code: Code::InvalidArgument, message, details: Vec::new() }
    }

    /// A fault of this machine (a full disk): another worker may do better.
    pub fn local(what: String, e: io::Error) -> Failure {
        Failure { code: Code::Internal, message: format!("{what}: {e}"), details: Vec::new() }
    }

    pub fn unavailable(message: String) -> Failure {
        Failure { code: Code::Unavailable, message, details: Vec::new() }
    }

    /// The CAS failing a call: retried.
    pub fn cas(e: RemoteError) -> Failure {
        Failure::unavailable(format!("the CAS failed: {e}"))
    }

    /// Blobs the CAS lacks, in REAPI's form.
    pub fn missing(blobs: &[Digest]) -> Failure {
        let violations: Vec<Violation> = blobs
            .iter()
            .map(|d| Violation {
                r#type: "MISSING".into(),
                subject: format!("blobs/{}/{}", d.hash, d.size_bytes),
                description: String::new(),
            })
            .collect();
        let names: Vec<&str> = violations.iter().map(|v| v.subject.as_str()).collect();
        Failure {
            code: Code::FailedPrecondition,
            message: format!("the CAS lacks {} input blob(s): {}", names.len(), names.join(", ")),
            details: vec![Any {
                type_url: PRECONDITION_FAILURE_TYPE.into(),
                value: PreconditionFailure { violations }.encode_to_vec(),
            }],
        }
    }

    pub fn status(&self) -> RpcStatus {
        RpcStatus { code: self.code as i32, message: self.message.clone(), details: self.details.clone() }
    }
}
