//! The TAP device: `/dev/net/tun` attached to a TAP interface with `virtio_net_hdr` framing
//! and the checksum and segmentation offloads.
//!
//! The interface is set up with three ioctls (`TUNSETIFF`, `TUNSETVNETHDRSZ`,
//! `TUNSETOFFLOAD`) through `libc`: neither rustix nor nix has a safe wrapper for them, and
//! the tun crates on crates.io do not set `IFF_VNET_HDR` and the offloads, which are the
//! point here. Those three calls are this crate's only `unsafe`.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::frame::VNET_HDR_LEN;

/// Why a name cannot be a Linux interface name, if it cannot: empty, longer than
/// `IFNAMSIZ - 1` bytes (15), or holding a character the kernel refuses (`/`, `:`,
/// whitespace, NUL), or `.`/`..`.
pub fn interface_name_error(name: &str) -> Option<String> {
    let max = libc::IFNAMSIZ - 1;
    if name.is_empty() {
        return Some("an interface name cannot be empty".into());
    }
    if name.len() > max {
        return Some(format!(
            "interface name {name:?} is {} bytes; Linux allows at most {max}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not an interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Some(format!(
            "interface name {name:?} holds a character Linux refuses ('/', ':' or whitespace)"
        ));
    }
    None
}

/// An open TAP device with `virtio_net_hdr` framing. A TAP interface this process created
/// goes away when it is dropped (one made persistent by `ip tuntap add` stays).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens TAP interface `name`, creating it in the calling process's network namespace
    /// if it does not exist (needs CAP_NET_ADMIN). With `offload`, the kernel may hand over
    /// TCP segments of up to 64 KiB with blank checksums (`TUN_F_CSUM | TUN_F_TSO4 |
    /// TUN_F_TSO6`); without, it segments and checksums every frame itself first. The
    /// interface is left down: bring it up (and move it, address it or bridge it) with `ip`.
    pub fn open(name: &str, offload: bool) -> io::Result<Tap> {
        if let Some(why) = interface_name_error(name) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/net/tun: {e}")))?;
        tun_attach(file.as_fd(), name, offload).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot attach TAP interface {name}: {e}"))
        })?;
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `timeout_ms` for a frame and reads it (header first) into `buf`, which
    /// should hold [`crate::READ_BUF_LEN`] bytes; returns its length, or `None` on timeout
    /// or when a signal interrupted the wait.
    pub fn read(&self, buf: &mut [u8], timeout_ms: u32) -> io::Result<Option<usize>> {
        if !readable(self.file.as_fd(), timeout_ms)? {
            return Ok(None);
        }
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one frame with its header in one `writev`.
    pub fn write(&self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<()> {
        let n = (&self.file).write_vectored(&[IoSlice::new(hdr), IoSlice::new(frame)])?;
        if n != hdr.len() + frame.len() {
            return Err(io::Error::other(format!(
                "the TAP took {n} of {} bytes",
                hdr.len() + frame.len()
            )));
        }
        Ok(())
    }
}

/// Waits up to `timeout_ms` for `fd` to be readable; whether it is (false on a signal).
fn readable(fd: BorrowedFd<'_>, timeout_ms: u32) -> io::Result<bool> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: i64::from(timeout_ms / 1000),
        tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Attaches an open `/dev/net/tun` descriptor to TAP interface `name` (created if needed)
/// with a `virtio_net_hdr` in front of every frame, and the checksum and TCP segmentation
/// offloads on or off. `name` has been checked by [`interface_name_error`].
fn tun_attach(fd: BorrowedFd<'_>, name: &str, offload: bool) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: ifreq is plain data for which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name is at most IFNAMSIZ - 1 bytes: the last byte stays the terminating NUL.
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, live for the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) })?;
    let len: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, live for the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) })?;
    let offloads: libc::c_ulong = if offload {
        (libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6).into()
    } else {
        0
    };
    // SAFETY: TUNSETOFFLOAD takes its argument by value; nothing is read through memory.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, offloads) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_linux_refuses_are_refused_with_the_reason() {
        assert_eq!(interface_name_error("tap0"), None);
        assert_eq!(interface_name_error("exactly15bytes_"), None);
        assert!(interface_name_error("").unwrap().contains("empty"));
        assert!(interface_name_error("sixteen_bytes_xx")
            .unwrap()
            .contains("at most 15"));
        for bad in ["a/b", "a:1", "a b", ".", ".."] {
            assert!(interface_name_error(bad).is_some(), "{bad}");
        }
    }
}
