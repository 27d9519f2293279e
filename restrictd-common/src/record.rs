//! Decoding ring-buffer records (userspace). Every size is checked against
//! what the record says about itself; a record that does not add up is an
//! error naming what is wrong, never a guess.

use std::{fmt, mem::size_of, vec::Vec};

use crate::{
    CommandEvent, DiskEvent, NetworkEvent, RecordHeader, TtyEvent, EVENT_COMMAND, EVENT_DISK,
    EVENT_NETWORK, EVENT_TTY,
};

/// One record from a ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Network(NetworkEvent),
    /// Header, path as given and the program's real path (without their
    /// NULs), and the raw NUL-separated argv bytes.
    Command(CommandEvent, Vec<u8>, Vec<u8>, Vec<u8>),
    /// Header and path (without its NUL).
    Disk(DiskEvent, Vec<u8>),
    /// Header and the terminal's bytes.
    Tty(TtyEvent, Vec<u8>),
}

impl Record {
    pub fn header(&self) -> &RecordHeader {
        match self {
            Record::Network(k) => &k.header,
            Record::Command(h, ..) => &h.header,
            Record::Disk(h, _) => &h.header,
            Record::Tty(h, _) => &h.header,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the fixed part of the record's kind.
    Short {
        kind: u32,
        len: usize,
        need: usize,
    },
    /// The lengths in the header run past the record's end.
    Lengths {
        kind: u32,
        len: usize,
        need: usize,
    },
    UnknownKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { kind, len, need } => {
                write!(
                    f,
                    "record of kind {kind}: {len} bytes, its header needs {need}"
                )
            }
            DecodeError::Lengths { kind, len, need } => write!(
                f,
                "record of kind {kind}: {len} bytes, its lengths add up to {need}"
            ),
            DecodeError::UnknownKind(k) => write!(f, "record of unknown kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// `T` from the start of `bytes`, if there are enough of them.
pub fn read_pod<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; `Pod` promises every bit pattern is a valid T.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn fixed<T: aya::Pod>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    read_pod(bytes).ok_or(DecodeError::Short {
        kind,
        len: bytes.len(),
        need: size_of::<T>(),
    })
}

/// The `lens` byte strings after the fixed part `T`; they must fit.
fn tail<T, const N: usize>(
    bytes: &[u8],
    kind: u32,
    lens: [u32; N],
) -> Result<[&[u8]; N], DecodeError> {
    let need = lens
        .iter()
        .try_fold(size_of::<T>(), |acc, l| acc.checked_add(*l as usize))
        .unwrap_or(usize::MAX);
    if need > bytes.len() {
        return Err(DecodeError::Lengths {
            kind,
            len: bytes.len(),
            need,
        });
    }
    let mut at = size_of::<T>();
    Ok(lens.map(|l| {
        let s = &bytes[at..at + l as usize];
        at += l as usize;
        s
    }))
}

fn strip_nul(s: &[u8]) -> Vec<u8> {
    s.strip_suffix(&[0]).unwrap_or(s).to_vec()
}

/// Decodes one ring-buffer record (its header says what it is).
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let kind = fixed::<RecordHeader>(bytes, 0)?.kind;
    match kind {
        EVENT_NETWORK => fixed(bytes, kind).map(Record::Network),
        EVENT_COMMAND => {
            let h: CommandEvent = fixed(bytes, kind)?;
            let [path, exe, argv] =
                tail::<CommandEvent, 3>(bytes, kind, [h.path_len, h.exe_len, h.argv_len])?;
            Ok(Record::Command(
                h,
                strip_nul(path),
                strip_nul(exe),
                argv.to_vec(),
            ))
        }
        EVENT_DISK => {
            let h: DiskEvent = fixed(bytes, kind)?;
            let [path] = tail::<DiskEvent, 1>(bytes, kind, [h.path_len])?;
            Ok(Record::Disk(h, strip_nul(path)))
        }
        EVENT_TTY => {
            let h: TtyEvent = fixed(bytes, kind)?;
            let [data] = tail::<TtyEvent, 1>(bytes, kind, [h.len])?;
            Ok(Record::Tty(h, data.to_vec()))
        }
        k => Err(DecodeError::UnknownKind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: aya::Pod>(v: &T) -> Vec<u8> {
        // SAFETY: Pod, read as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn a_command_record_round_trips() {
        let mut h = CommandEvent::default();
        h.header.kind = EVENT_COMMAND;
        h.path_len = 5;
        h.exe_len = 9;
        h.argv_len = 6;
        let mut b = bytes(&h);
        b.extend_from_slice(b"/bin\0/usr/bin\0ls\0-l\0\0");
        let r = decode(&b).unwrap();
        assert_eq!(
            r,
            Record::Command(
                h,
                b"/bin".to_vec(),
                b"/usr/bin".to_vec(),
                b"ls\0-l\0".to_vec()
            )
        );
    }

    #[test]
    fn a_terminal_record_keeps_its_bytes_exactly() {
        let mut h = TtyEvent::default();
        h.header.kind = EVENT_TTY;
        h.len = 4;
        let mut b = bytes(&h);
        b.extend_from_slice(b"a\0\x1b\n");
        assert_eq!(decode(&b), Ok(Record::Tty(h, b"a\0\x1b\n".to_vec())));
        h.len = 5;
        let mut b = bytes(&h);
        b.extend_from_slice(b"a\0\x1b\n");
        assert!(matches!(decode(&b), Err(DecodeError::Lengths { .. })));
    }

    #[test]
    fn lengths_past_the_end_are_refused() {
        let mut h = DiskEvent::default();
        h.header.kind = EVENT_DISK;
        h.path_len = 100;
        let mut b = bytes(&h);
        b.extend_from_slice(b"/etc/passwd\0");
        assert_eq!(
            decode(&b),
            Err(DecodeError::Lengths {
                kind: EVENT_DISK,
                len: size_of::<DiskEvent>() + 12,
                need: size_of::<DiskEvent>() + 100
            })
        );
        let mut h = CommandEvent::default();
        h.header.kind = EVENT_COMMAND;
        h.path_len = u32::MAX;
        h.exe_len = u32::MAX;
        h.argv_len = u32::MAX;
        assert!(matches!(
            decode(&bytes(&h)),
            Err(DecodeError::Lengths { .. })
        ));
    }

    #[test]
    fn short_and_unknown_records_are_refused() {
        let mut k = NetworkEvent::default();
        k.header.kind = EVENT_NETWORK;
        let b = bytes(&k);
        assert_eq!(decode(&b), Ok(Record::Network(k)));
        assert_eq!(
            decode(&b[..b.len() - 1]),
            Err(DecodeError::Short {
                kind: EVENT_NETWORK,
                len: b.len() - 1,
                need: b.len()
            })
        );
        assert!(matches!(
            decode(&[1, 2]),
            Err(DecodeError::Short { kind: 0, .. })
        ));
        let h = RecordHeader {
            kind: 77,
            ..Default::default()
        };
        assert_eq!(decode(&bytes(&h)), Err(DecodeError::UnknownKind(77)));
    }
}
