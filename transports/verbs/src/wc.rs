//! Work-completion statuses: `enum ibv_wc_status` codes mapped to the
//! transport's [`WcStatus`].
//!
//! The codes are fixed by the verbs ABI (`<infiniband/verbs.h>`); with the
//! `sideway` feature a test checks them against the generated bindings.

use slimebench_proto::WcStatus;

pub const IBV_WC_SUCCESS: u32 = 0;
pub const IBV_WC_LOC_LEN_ERR: u32 = 1;
pub const IBV_WC_LOC_QP_OP_ERR: u32 = 2;
pub const IBV_WC_LOC_EEC_OP_ERR: u32 = 3;
pub const IBV_WC_LOC_PROT_ERR: u32 = 4;
pub const IBV_WC_WR_FLUSH_ERR: u32 = 5;
pub const IBV_WC_MW_BIND_ERR: u32 = 6;
pub const IBV_WC_BAD_RESP_ERR: u32 = 7;
pub const IBV_WC_LOC_ACCESS_ERR: u32 = 8;
pub const IBV_WC_REM_INV_REQ_ERR: u32 = 9;
pub const IBV_WC_REM_ACCESS_ERR: u32 = 10;
pub const IBV_WC_REM_OP_ERR: u32 = 11;
pub const IBV_WC_RETRY_EXC_ERR: u32 = 12;
pub const IBV_WC_RNR_RETRY_EXC_ERR: u32 = 13;
pub const IBV_WC_LOC_RDD_VIOL_ERR: u32 = 14;
pub const IBV_WC_REM_INV_RD_REQ_ERR: u32 = 15;
pub const IBV_WC_REM_ABORT_ERR: u32 = 16;
pub const IBV_WC_INV_EECN_ERR: u32 = 17;
pub const IBV_WC_INV_EEC_STATE_ERR: u32 = 18;
pub const IBV_WC_FATAL_ERR: u32 = 19;
pub const IBV_WC_RESP_TIMEOUT_ERR: u32 = 20;
pub const IBV_WC_GENERAL_ERR: u32 = 21;
pub const IBV_WC_TM_ERR: u32 = 22;
pub const IBV_WC_TM_RNDV_INCOMPLETE: u32 = 23;

/// `ibv_wc_status_str` names, for causes and logs (the library's own table
/// is not needed, and is not there when the library is not loaded).
pub fn status_name(code: u32) -> &'static str {
    match code {
        IBV_WC_SUCCESS => "success",
        IBV_WC_LOC_LEN_ERR => "local length error",
        IBV_WC_LOC_QP_OP_ERR => "local QP operation error",
        IBV_WC_LOC_EEC_OP_ERR => "local EE context operation error",
        IBV_WC_LOC_PROT_ERR => "local protection error",
        IBV_WC_WR_FLUSH_ERR => "work request flushed error",
        IBV_WC_MW_BIND_ERR => "memory window bind error",
        IBV_WC_BAD_RESP_ERR => "bad response error",
        IBV_WC_LOC_ACCESS_ERR => "local access error",
        IBV_WC_REM_INV_REQ_ERR => "remote invalid request error",
        IBV_WC_REM_ACCESS_ERR => "remote access error",
        IBV_WC_REM_OP_ERR => "remote operation error",
        IBV_WC_RETRY_EXC_ERR => "transport retry counter exceeded",
        IBV_WC_RNR_RETRY_EXC_ERR => "RNR retry counter exceeded",
        IBV_WC_LOC_RDD_VIOL_ERR => "local RDD violation error",
        IBV_WC_REM_INV_RD_REQ_ERR => "remote invalid RD request",
        IBV_WC_REM_ABORT_ERR => "aborted error",
        IBV_WC_INV_EECN_ERR => "invalid EE context number",
        IBV_WC_INV_EEC_STATE_ERR => "invalid EE context state",
        IBV_WC_FATAL_ERR => "fatal error",
        IBV_WC_RESP_TIMEOUT_ERR => "response timeout error",
        IBV_WC_GENERAL_ERR => "general error",
        IBV_WC_TM_ERR => "tag matching error",
        IBV_WC_TM_RNDV_INCOMPLETE => "tag matching rendezvous incomplete",
        _ => "unknown status",
    }
}

/// A mapped completion status, with the cause to keep when it fails the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedStatus {
    pub status: WcStatus,
    /// `None` for success and for our own cancellation; otherwise names the
    /// verbs status and its code.
    pub cause: Option<String>,
}

/// Map an `ibv_wc_status` code. `after_shutdown` says whether we moved the
/// QP to the error state ourselves: then a flush is our cancellation.
///
/// - SUCCESS → `Ok`;
/// - RETRY_EXC, RNR_RETRY_EXC → `RetryExceeded` (the peer stopped answering,
///   or never posted receives);
/// - REM_ACCESS, LOC_PROT, REM_INV_REQ → `RemoteAccess` (a stale or wrong
///   rkey/address on one side, or a write longer than the peer's region);
/// - WR_FLUSH → `Cancelled` after our shutdown, else `Flushed` (the QP went to
///   the error state because of an earlier failure);
/// - everything else → `Flushed`, with the code in the cause.
pub fn map_status(code: u32, vendor_err: u32, after_shutdown: bool) -> MappedStatus {
    let status = match code {
        IBV_WC_SUCCESS => {
            return MappedStatus {
                status: WcStatus::Ok,
                cause: None,
            }
        }
        IBV_WC_WR_FLUSH_ERR if after_shutdown => {
            return MappedStatus {
                status: WcStatus::Cancelled,
                cause: None,
            }
        }
        IBV_WC_RETRY_EXC_ERR | IBV_WC_RNR_RETRY_EXC_ERR => WcStatus::RetryExceeded,
        IBV_WC_REM_ACCESS_ERR | IBV_WC_LOC_PROT_ERR | IBV_WC_REM_INV_REQ_ERR => WcStatus::RemoteAccess,
        _ => WcStatus::Flushed,
    };
    MappedStatus {
        status,
        cause: Some(format!(
            "{} (ibv_wc_status {code}, vendor error {vendor_err:#x})",
            status_name(code)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_table() {
        use WcStatus::*;
        let table: &[(u32, WcStatus, WcStatus)] = &[
            // code, before shutdown, after shutdown
            (IBV_WC_SUCCESS, Ok, Ok),
            (IBV_WC_RETRY_EXC_ERR, RetryExceeded, RetryExceeded),
            (IBV_WC_RNR_RETRY_EXC_ERR, RetryExceeded, RetryExceeded),
            (IBV_WC_REM_ACCESS_ERR, RemoteAccess, RemoteAccess),
            (IBV_WC_LOC_PROT_ERR, RemoteAccess, RemoteAccess),
            (IBV_WC_REM_INV_REQ_ERR, RemoteAccess, RemoteAccess),
            (IBV_WC_WR_FLUSH_ERR, Flushed, Cancelled),
            (IBV_WC_LOC_LEN_ERR, Flushed, Flushed),
            (IBV_WC_LOC_QP_OP_ERR, Flushed, Flushed),
            (IBV_WC_BAD_RESP_ERR, Flushed, Flushed),
            (IBV_WC_REM_OP_ERR, Flushed, Flushed),
            (IBV_WC_REM_ABORT_ERR, Flushed, Flushed),
            (IBV_WC_FATAL_ERR, Flushed, Flushed),
            (IBV_WC_GENERAL_ERR, Flushed, Flushed),
            (IBV_WC_RESP_TIMEOUT_ERR, Flushed, Flushed),
            (999, Flushed, Flushed),
        ];
        for &(code, before, after) in table {
            assert_eq!(map_status(code, 0, false).status, before, "code {code}");
            assert_eq!(map_status(code, 0, true).status, after, "code {code} after shutdown");
        }
    }

    #[test]
    fn causes_name_the_code() {
        assert_eq!(map_status(IBV_WC_SUCCESS, 0, false).cause, None);
        assert_eq!(map_status(IBV_WC_WR_FLUSH_ERR, 0, true).cause, None);
        let m = map_status(IBV_WC_REM_OP_ERR, 0x51, false);
        assert_eq!(
            m.cause.as_deref(),
            Some("remote operation error (ibv_wc_status 11, vendor error 0x51)")
        );
        let m = map_status(77, 0, false);
        assert_eq!(m.status, WcStatus::Flushed);
        assert!(m.cause.unwrap().contains("ibv_wc_status 77"));
        assert!(map_status(IBV_WC_RETRY_EXC_ERR, 0, false)
            .cause
            .unwrap()
            .starts_with("transport retry counter exceeded"));
    }

    #[test]
    fn every_code_has_a_name() {
        for code in 0..=IBV_WC_TM_RNDV_INCOMPLETE {
            assert_ne!(status_name(code), "unknown status", "{code}");
        }
        assert_eq!(status_name(24), "unknown status");
    }

    #[cfg(feature = "sideway")]
    #[test]
    fn codes_match_the_bindings() {
        use rdma_mummy_sys::ibv_wc_status as s;
        let pairs = [
            (IBV_WC_SUCCESS, s::IBV_WC_SUCCESS),
            (IBV_WC_LOC_LEN_ERR, s::IBV_WC_LOC_LEN_ERR),
            (IBV_WC_LOC_QP_OP_ERR, s::IBV_WC_LOC_QP_OP_ERR),
            (IBV_WC_LOC_EEC_OP_ERR, s::IBV_WC_LOC_EEC_OP_ERR),
            (IBV_WC_LOC_PROT_ERR, s::IBV_WC_LOC_PROT_ERR),
            (IBV_WC_WR_FLUSH_ERR, s::IBV_WC_WR_FLUSH_ERR),
            (IBV_WC_MW_BIND_ERR, s::IBV_WC_MW_BIND_ERR),
            (IBV_WC_BAD_RESP_ERR, s::IBV_WC_BAD_RESP_ERR),
            (IBV_WC_LOC_ACCESS_ERR, s::IBV_WC_LOC_ACCESS_ERR),
            (IBV_WC_REM_INV_REQ_ERR, s::IBV_WC_REM_INV_REQ_ERR),
            (IBV_WC_REM_ACCESS_ERR, s::IBV_WC_REM_ACCESS_ERR),
            (IBV_WC_REM_OP_ERR, s::IBV_WC_REM_OP_ERR),
            (IBV_WC_RETRY_EXC_ERR, s::IBV_WC_RETRY_EXC_ERR),
            (IBV_WC_RNR_RETRY_EXC_ERR, s::IBV_WC_RNR_RETRY_EXC_ERR),
            (IBV_WC_LOC_RDD_VIOL_ERR, s::IBV_WC_LOC_RDD_VIOL_ERR),
            (IBV_WC_REM_INV_RD_REQ_ERR, s::IBV_WC_REM_INV_RD_REQ_ERR),
            (IBV_WC_REM_ABORT_ERR, s::IBV_WC_REM_ABORT_ERR),
            (IBV_WC_INV_EECN_ERR, s::IBV_WC_INV_EECN_ERR),
            (IBV_WC_INV_EEC_STATE_ERR, s::IBV_WC_INV_EEC_STATE_ERR),
            (IBV_WC_FATAL_ERR, s::IBV_WC_FATAL_ERR),
            (IBV_WC_RESP_TIMEOUT_ERR, s::IBV_WC_RESP_TIMEOUT_ERR),
            (IBV_WC_GENERAL_ERR, s::IBV_WC_GENERAL_ERR),
            (IBV_WC_TM_ERR, s::IBV_WC_TM_ERR),
            (IBV_WC_TM_RNDV_INCOMPLETE, s::IBV_WC_TM_RNDV_INCOMPLETE),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, theirs);
        }
    }
}
