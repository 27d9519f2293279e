//! journald's native protocol, written by the recorder for every event.
//!
//! Why not `libsystemd::logging::journal_send`: it sends every entry with
//! `sendto` to the socket's path, so the kernel looks the path up for each
//! datagram, and it takes the fields as owned pairs that it validates and
//! copies again. Here the socket is connected once and the entry is built
//! in one buffer that is reused, which halves the writer's CPU per event
//! under journald (BENCHMARKS.md).
//! The protocol: <https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>.

use std::{
    io::{self, Write},
    os::{fd::AsRawFd, unix::net::UnixDatagram},
    path::{Path, PathBuf},
};

/// A connection to journald's native socket.
pub struct Journal {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    buf: Vec<u8>,
}

/// The fields of one entry being built.
pub struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    /// Adds `key=value`. `key` must be a journald field name (A–Z, 0–9 and
    /// `_`, not starting with `_`); a value with a newline is sent in the
    /// protocol's binary form, so it cannot start a field of its own.
    pub fn add(&mut self, key: &str, value: &str) {
        debug_assert!(
            key.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "journald field name {key:?}"
        );
        self.0.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            self.0.push(b'\n');
            self.0
                .extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            self.0.push(b'=');
        }
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'\n');
    }
}

impl Journal {
    pub fn new(path: impl AsRef<Path>) -> Journal {
        Journal {
            path: path.as_ref().to_path_buf(),
            sock: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends one entry whose fields `fill` adds.
    pub fn send(&mut self, fill: impl FnOnce(&mut Fields)) -> io::Result<()> {
        self.buf.clear();
        fill(&mut Fields(&mut self.buf));
        // journald restarted: its socket is a new one at the same path.
        match self.send_buf() {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ENOENT)
                ) =>
            {
                self.sock = None;
                self.send_buf()
            }
            r => r,
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        let sock = match &self.sock {
            Some(s) => s,
            None => {
                let s = UnixDatagram::unbound()?;
                s.connect(&self.path)?;
                self.sock.insert(s)
            }
        };
        match sock.send(&self.buf) {
            Ok(_) => Ok(()),
            // Larger than a datagram may be (a long argv): journald reads it
            // from a sealed memfd passed with the datagram instead.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS)) => {
                send_memfd(sock, &self.buf)
            }
            Err(e) => Err(e),
        }
    }
}

fn send_memfd(sock: &UnixDatagram, data: &[u8]) -> io::Result<()> {
    use nix::{
        fcntl::{fcntl, FcntlArg, SealFlag},
        sys::{
            memfd::{memfd_create, MemFdCreateFlag},
            socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr},
        },
    };
    let fd = memfd_create(
        c"restrictd-journal",
        MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    // journald takes only a sealed memfd: it maps it and must know that
    // nobody can change it underneath.
    fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(SealFlag::all()))?;
    let fds = [file.as_raw_fd()];
    sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &[],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// A fake journald for tests: what arrives at a bound socket.
#[cfg(test)]
pub(crate) mod fake {
    use std::os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixDatagram,
    };

    /// A fake journald's socket at `path`: a datagram that never comes
    /// fails the test instead of hanging it.
    pub fn bind(path: &std::path::Path) -> UnixDatagram {
        let s = UnixDatagram::bind(path).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s
    }

    /// Parses a native-protocol entry into (key, value) pairs.
    pub fn parse(mut d: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !d.is_empty() {
            let nl = d.iter().position(|&b| b == b'\n').unwrap();
            let line = &d[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    String::from_utf8(line[eq + 1..].to_vec()).unwrap(),
                ));
                d = &d[nl + 1..];
            } else {
                let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let v = &d[nl + 9..nl + 9 + len];
                assert_eq!(d[nl + 9 + len], b'\n');
                out.push((
                    String::from_utf8(line.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ));
                d = &d[nl + 10 + len..];
            }
        }
        out
    }

    /// One datagram from `server`: its bytes, or the memfd's it carries.
    pub fn receive(server: &UnixDatagram) -> Vec<u8> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
        use std::io::{IoSliceMut, Read, Seek};
        let mut buf = vec![0u8; 1 << 20];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (n, fd) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<UnixAddr>(
                server.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .unwrap();
            let fd = msg.cmsgs().unwrap().find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            });
            (msg.bytes, fd)
        };
        match fd {
            None => buf[..n].to_vec(),
            Some(fd) => {
                // SAFETY: the kernel just installed this descriptor for us.
                let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                let seals =
                    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
                assert_ne!(seals, 0, "journald takes only sealed memfds");
                // The sender's file offset is shared: read from the start,
                // as journald's mmap does.
                let mut v = Vec::new();
                f.seek(std::io::SeekFrom::Start(0)).unwrap();
                f.read_to_end(&mut v).unwrap();
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{bind, parse, receive};
    use super::*;

    #[test]
    fn entries_arrive_whole_also_large_ones_and_after_journald_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = bind(&path);
        let mut j = Journal::new(&path);

        j.send(|f| {
            f.add("MESSAGE", "alice ran ls");
            f.add("ARGV", "[\"a\nb\"]");
        })
        .unwrap();
        assert_eq!(
            parse(&receive(&server)),
            [
                ("MESSAGE".into(), "alice ran ls".into()),
                ("ARGV".into(), "[\"a\nb\"]".into())
            ]
        );

        // Past the socket's send buffer: sent as a memfd.
        let big = "x".repeat(4 << 20);
        j.send(|f| f.add("ARGV", &big)).unwrap();
        let got = parse(&receive(&server));
        assert!(
            got.len() == 1 && got[0].0 == "ARGV" && got[0].1 == big,
            "the large entry arrived changed"
        );

        // journald restarted: a new socket at the same path.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        let server = bind(&path);
        j.send(|f| f.add("MESSAGE", "after")).unwrap();
        assert_eq!(
            parse(&receive(&server)),
            [("MESSAGE".into(), "after".into())]
        );

        // No journald: the error reaches the caller (who falls back to syslog).
        drop(server);
        std::fs::remove_file(&path).unwrap();
        assert!(j.send(|f| f.add("MESSAGE", "lost?")).is_err());
    }
}
