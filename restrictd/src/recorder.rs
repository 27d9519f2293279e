//! Moves events from the kernel's ring buffer to the outputs: decode, stamp
//! with the session (`Registry`), write (`Output`). One `Recorder` per
//! restrictd process; `drain` may be called from anywhere (e.g. before a
//! session's `session.end`), the async `run` loop calls it when data arrives.

use std::{
    os::fd::{AsRawFd, RawFd},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    bpf::decode_network_event,
    events::{Event, Output},
    session::Registry,
};

pub struct Recorder {
    ring: Mutex<RingBuf<MapData>>,
    ring_fd: RawFd,
    pub registry: Mutex<Registry>,
    output: Mutex<Output>,
}

/// The ring buffer's fd, for polling; the buffer itself stays in the Recorder.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Recorder {
    pub fn new(ring: RingBuf<MapData>, registry: Registry, output: Output) -> Arc<Recorder> {
        let ring_fd = ring.as_raw_fd();
        Arc::new(Recorder {
            ring: Mutex::new(ring),
            ring_fd,
            registry: Mutex::new(registry),
            output: Mutex::new(output),
        })
    }

    /// Writes every record waiting in the ring buffer, in order.
    pub fn drain(&self) {
        let mut ring = self.ring.lock().unwrap();
        while let Some(item) = ring.next() {
            let Some(k) = decode_network_event(&item) else {
                log::error!(
                    "short network record ({} bytes) from the kernel",
                    item.len()
                );
                continue;
            };
            let ev = self.registry.lock().unwrap().network_event(&k);
            self.output.lock().unwrap().emit(&ev);
        }
    }

    pub fn emit(&self, ev: &Event) {
        self.output.lock().unwrap().emit(ev);
    }

    pub fn system_log_name(&self) -> &'static str {
        self.output.lock().unwrap().system_log_name()
    }

    /// Drains whenever the kernel signals data, until `stop` fires; then
    /// drains once more.
    pub async fn run(self: Arc<Self>, stop: tokio::sync::oneshot::Receiver<()>) -> Result<()> {
        // SAFETY: the fd belongs to the ring buffer held by `self`, which this
        // future keeps alive (and unchanged) for as long as the AsyncFd exists.
        let fd =
            unsafe { AsyncFd::register_with_interest(RingFd(self.ring_fd), Interest::READABLE) }
                .map_err(|e| {
                    anyhow::anyhow!("polling the event ring buffer: {}", e.into_parts().1)
                })?;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                guard = fd.readable() => {
                    let mut guard = guard.context("polling the event ring buffer")?;
                    self.drain();
                    guard.clear_ready();
                }
                _ = &mut stop => {
                    self.drain();
                    return Ok(());
                }
            }
        }
    }
}
