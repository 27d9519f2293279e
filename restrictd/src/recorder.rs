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
    bpf::{decode, Record},
    events::{DiskBody, Event, Output},
    session::Registry,
};

pub struct Recorder {
    /// One lock for all rings: a drain sees every ring in turn.
    rings: Mutex<Vec<RingBuf<MapData>>>,
    ring_fds: Vec<RawFd>,
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
    pub fn new(rings: Vec<RingBuf<MapData>>, registry: Registry, output: Output) -> Arc<Recorder> {
        let ring_fds = rings.iter().map(|r| r.as_raw_fd()).collect();
        Arc::new(Recorder {
            rings: Mutex::new(rings),
            ring_fds,
            registry: Mutex::new(registry),
            output: Mutex::new(output),
        })
    }

    /// Writes every record waiting in the ring buffers, each in order.
    pub fn drain(&self) {
        let mut rings = self.rings.lock().unwrap();
        for ring in rings.iter_mut() {
            while let Some(item) = ring.next() {
                let ev = match decode(&item) {
                    Some(Record::Network(k)) => self.registry.lock().unwrap().network_event(&k),
                    Some(Record::Command(h, path, argv)) => self
                        .registry
                        .lock()
                        .unwrap()
                        .command_event(&h, &path, &argv),
                    Some(Record::Disk(h, path)) => self
                        .registry
                        .lock()
                        .unwrap()
                        .disk_event(&h, DiskBody::from_kernel(&h, &path)),
                    None => {
                        log::error!("undecodable record ({} bytes) from the kernel", item.len());
                        continue;
                    }
                };
                self.output.lock().unwrap().emit(&ev);
            }
        }
    }

    pub fn emit(&self, ev: &Event) {
        self.output.lock().unwrap().emit(ev);
    }

    pub fn report_lost(&self, lost: crate::bpf::Lost) {
        self.output.lock().unwrap().report_lost(lost);
    }

    pub fn system_log_name(&self) -> &'static str {
        self.output.lock().unwrap().system_log_name()
    }

    /// Drains whenever the kernel signals data on any ring, until `stop`
    /// fires; then drains once more.
    pub async fn run(self: Arc<Self>, stop: tokio::sync::oneshot::Receiver<()>) -> Result<()> {
        let mut waiters = tokio::task::JoinSet::new();
        for &fd in &self.ring_fds {
            let me = self.clone();
            waiters.spawn(async move {
                // SAFETY: the fd belongs to a ring buffer held by `me`, which
                // this task keeps alive (and unchanged) while the AsyncFd exists.
                let fd = unsafe { AsyncFd::register_with_interest(RingFd(fd), Interest::READABLE) }
                    .map_err(|e| {
                        anyhow::anyhow!("polling an event ring buffer: {}", e.into_parts().1)
                    })?;
                loop {
                    let mut guard = fd
                        .readable()
                        .await
                        .context("polling an event ring buffer")?;
                    me.drain();
                    guard.clear_ready();
                }
                #[allow(unreachable_code)]
                Ok::<(), anyhow::Error>(())
            });
        }
        tokio::select! {
            r = waiters.join_next() => {
                if let Some(r) = r {
                    r.context("event reader")??;
                }
            }
            _ = stop => {}
        }
        waiters.abort_all();
        self.drain();
        Ok(())
    }
}
