//! The XenStore wire protocol (`io/xs_wire.h`): message header, types, error names and
//! path rules.

use crate::DomId;

/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: a longer payload kills the connection.
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path.
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path.
pub const REL_PATH_MAX: usize = 2048;

/// Message types (`enum xsd_sockmsg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
}

impl MsgType {
    /// The type for a code, `None` for unknown or removed codes (20 was `XS_RESTRICT`).
    pub fn from_code(code: u32) -> Option<MsgType> {
        use MsgType::*;
        Some(match code {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            _ => return None,
        })
    }
}

/// The error names xenstored sends (`xsd_errors`), in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Errno {
    EINVAL,
    EACCES,
    EEXIST,
    EISDIR,
    ENOENT,
    ENOMEM,
    ENOSPC,
    EIO,
    ENOTEMPTY,
    ENOSYS,
    EROFS,
    EBUSY,
    EAGAIN,
    EISCONN,
    E2BIG,
    EPERM,
}

impl Errno {
    /// The name sent in an `XS_ERROR` payload.
    pub fn name(self) -> &'static str {
        use Errno::*;
        match self {
            EINVAL => "EINVAL",
            EACCES => "EACCES",
            EEXIST => "EEXIST",
            EISDIR => "EISDIR",
            ENOENT => "ENOENT",
            ENOMEM => "ENOMEM",
            ENOSPC => "ENOSPC",
            EIO => "EIO",
            ENOTEMPTY => "ENOTEMPTY",
            ENOSYS => "ENOSYS",
            EROFS => "EROFS",
            EBUSY => "EBUSY",
            EAGAIN => "EAGAIN",
            EISCONN => "EISCONN",
            E2BIG => "E2BIG",
            EPERM => "EPERM",
        }
    }

    /// The error for a name.
    pub fn from_name(name: &str) -> Option<Errno> {
        use Errno::*;
        [
            EINVAL, EACCES, EEXIST, EISDIR, ENOENT, ENOMEM, ENOSPC, EIO, ENOTEMPTY, ENOSYS, EROFS,
            EBUSY, EAGAIN, EISCONN, E2BIG, EPERM,
        ]
        .into_iter()
        .find(|e| e.name() == name)
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `type` (raw, possibly unknown).
    pub ty: u32,
    /// `req_id`, echoed in the reply.
    pub req_id: u32,
    /// `tx_id`, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Decodes the 16 header bytes (little-endian, as on x86 and Arm).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            ty: w(0),
            req_id: w(4),
            tx_id: w(8),
            len: w(12),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.ty.to_le_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }
}

/// Encodes a whole message.
pub fn message(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(
        &Header {
            ty,
            req_id,
            tx_id,
            len: payload.len() as u32,
        }
        .encode(),
    );
    v.extend_from_slice(payload);
    v
}

/// What [`read_frame`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A message: its header; its payload is the first `len` bytes of the buffer.
    Message(Header),
    /// A header announcing more than `XENSTORE_PAYLOAD_MAX` bytes: the stream cannot be
    /// followed further (xenstored closes such a connection).
    Oversized(Header),
    /// The stream ended, possibly inside a message.
    End,
}

/// Reads one message from `r` into `payload`, never reading past what the header says.
pub fn read_frame(r: &mut impl std::io::Read, payload: &mut [u8; PAYLOAD_MAX]) -> Frame {
    let mut hdr = [0u8; HEADER_LEN];
    if r.read_exact(&mut hdr).is_err() {
        return Frame::End;
    }
    let h = Header::decode(&hdr);
    if h.len as usize > PAYLOAD_MAX {
        return Frame::Oversized(h);
    }
    if r.read_exact(&mut payload[..h.len as usize]).is_err() {
        return Frame::End;
    }
    Frame::Message(h)
}

/// Splits a payload into its NUL-terminated strings (the last one must be terminated).
pub fn split_args(payload: &[u8]) -> Result<Vec<&str>, Errno> {
    let Some(body) = payload.strip_suffix(&[0]) else {
        return Err(Errno::EINVAL);
    };
    body.split(|b| *b == 0)
        .map(|s| std::str::from_utf8(s).map_err(|_| Errno::EINVAL))
        .collect()
}

/// Validates `path` and makes it absolute for domain `dom` (relative paths are under
/// `/local/domain/<dom>`). Special watch paths (`@...`) are allowed only if `special`.
pub fn canonical(dom: DomId, path: &str, special: bool) -> Result<String, Errno> {
    if special && path.starts_with('@') {
        return match path {
            "@introduceDomain" | "@releaseDomain" => Ok(path.to_string()),
            _ => Err(Errno::EINVAL),
        };
    }
    if path.is_empty()
        || !path
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-/_@".contains(&c))
    {
        return Err(Errno::EINVAL);
    }
    let abs = path.starts_with('/');
    if (abs && path.len() > ABS_PATH_MAX) || (!abs && path.len() > REL_PATH_MAX) {
        return Err(Errno::EINVAL);
    }
    if path.contains("//") || (path.len() > 1 && path.ends_with('/')) {
        return Err(Errno::EINVAL);
    }
    let full = if abs {
        path.to_string()
    } else {
        format!("/local/domain/{dom}/{path}")
    };
    if full.len() > ABS_PATH_MAX {
        return Err(Errno::EINVAL);
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            canonical(3, "device/vif/0", false).unwrap(),
            "/local/domain/3/device/vif/0"
        );
        assert_eq!(canonical(3, "/", false).unwrap(), "/");
        for bad in ["", "a//b", "/a/", "a b", "a\u{e9}", "a\0b"] {
            assert_eq!(canonical(1, bad, false), Err(Errno::EINVAL), "{bad:?}");
        }
        assert!(canonical(1, "@releaseDomain", true).is_ok());
        assert!(canonical(1, "@other", true).is_err());
        assert!(canonical(1, &"a".repeat(2049), false).is_err());
        assert!(canonical(1, &format!("/{}", "a".repeat(3071)), false).is_ok());
        assert!(canonical(1, &format!("/{}", "a".repeat(3072)), false).is_err());
    }

    #[test]
    fn args_and_headers() {
        assert_eq!(split_args(b"a\0b\0").unwrap(), vec!["a", "b"]);
        assert_eq!(split_args(b"\0").unwrap(), vec![""]);
        assert_eq!(split_args(b"a"), Err(Errno::EINVAL));
        let h = Header {
            ty: 2,
            req_id: 7,
            tx_id: 9,
            len: 4,
        };
        assert_eq!(Header::decode(&h.encode()), h);
        assert_eq!(Errno::from_name("EAGAIN"), Some(Errno::EAGAIN));
        assert_eq!(MsgType::from_code(20), None);
    }
}
