//! ip2p's XDP fast path: an XDP program (bpf/relay.bpf.c, C built by clang
//! in build.rs) that relays ChannelData on bound channels in the driver's
//! receive hook, and its loader (aya): [`FastPath`] loads and attaches it,
//! [`Tables`] is a worker's handle on its maps.
//!
//! Why a C program and aya: clang from Debian builds C for the BPF target
//! with nothing else (a Rust program needs bpf-linker and a matching LLVM),
//! and aya loads it with no C library at run time (libbpf-rs needs libelf
//! and a C build), so the relay builds everywhere and the fast path is
//! simply absent (`PROGRAM` is `None`) where clang or libbpf's headers are
//! not (`xdp/toolchain.sh` installs both).

mod tables;

use std::fmt;
use std::os::fd::AsFd;
use std::time::Instant;

use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

pub use self::tables::{Channel, FlowCounters, FlowKey, FlowOut, OutcomeCount, Outcomes};

/// The compiled program, when the build had clang and libbpf's headers.
#[cfg(ip2p_xdp_program)]
pub const PROGRAM: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ip2p_xdp.o")));
/// The compiled program, when the build had clang and libbpf's headers.
#[cfg(not(ip2p_xdp_program))]
pub const PROGRAM: Option<&[u8]> = None;

/// What went wrong, with the step it went wrong at.
#[derive(Debug)]
pub struct Error {
    what: &'static str,
    detail: String,
    errno: Option<i32>,
}

impl Error {
    fn new(what: &'static str, detail: impl fmt::Display) -> Self {
        Self { what, detail: detail.to_string(), errno: None }
    }

    /// The kernel's errno, when the failure was a system call's.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)
    }
}

impl std::error::Error for Error {}

/// How to attach: in the driver (native), or in the kernel's generic hook
/// (works on every interface, slower, and only when asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The driver's hook (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// The generic hook after the socket buffer is built (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

/// Table sizes.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Channels (one entry in each direction's table per channel).
    pub channels: u32,
    /// Allocations with per-allocation counters (slots).
    pub slots: u32,
}

/// The program, loaded, and the interfaces it is attached to. Dropping it
/// detaches it everywhere and unloads it (links die with their last file
/// descriptor, so a crashed process leaves nothing attached either).
#[derive(Debug)]
pub struct FastPath {
    ebpf: Ebpf,
    /// Interface, program, link.
    attached: Vec<(String, &'static str, aya::programs::xdp::XdpLinkId)>,
}

const RELAY: &str = "ip2p_relay";
const PASS: &str = "ip2p_pass";

impl FastPath {
    /// Loads the program and creates its maps (the verifier runs here).
    ///
    /// # Errors
    /// The program was not built, the kernel has no BPF or refuses it, or
    /// the process lacks the capabilities (CAP_BPF and CAP_NET_ADMIN).
    pub fn load(capacity: Capacity) -> Result<Self, Error> {
        let object = PROGRAM.ok_or_else(|| Error::new("loading", "built without the XDP program (no clang)"))?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("from_clients", capacity.channels.max(1))
            .map_max_entries("from_peers", capacity.channels.max(1))
            .map_max_entries("counters", capacity.slots.max(1))
            .load(object)
            .map_err(|e| Error::new("loading", e))?;
        for name in [RELAY, PASS] {
            let prog: &mut Xdp = program(&mut ebpf, name)?;
            prog.load().map_err(|e| Error::new("verifying", verifier(e)))?;
        }
        Ok(Self { ebpf, attached: Vec::new() })
    }

    /// Attaches the relay program to interface `ifname` (of the calling
    /// thread's network namespace).
    ///
    /// # Errors
    /// No such interface, or its driver refuses the mode (many virtual
    /// NICs have no native XDP), or another program holds the hook.
    pub fn attach(&mut self, ifname: &str, mode: Mode) -> Result<(), Error> {
        self.attach_program(RELAY, ifname, mode)
    }

    /// Attaches the pass-through program (for the far end of a veth pair,
    /// which delivers what XDP sends to it only when it has a program too).
    ///
    /// # Errors
    /// As [`FastPath::attach`].
    pub fn attach_pass(&mut self, ifname: &str, mode: Mode) -> Result<(), Error> {
        self.attach_program(PASS, ifname, mode)
    }

    fn attach_program(&mut self, name: &'static str, ifname: &str, mode: Mode) -> Result<(), Error> {
        let prog: &mut Xdp = program(&mut self.ebpf, name)?;
        let flags = match mode {
            Mode::Native => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        };
        let link = prog.attach(ifname, flags).map_err(|e| attach_error(&e))?;
        self.attached.push((ifname.to_owned(), name, link));
        Ok(())
    }

    /// The interfaces the programs are attached to.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.attached.iter().map(|(i, _, _)| i.as_str())
    }

    /// Detaches everything (the draining node's traffic all goes through
    /// the sockets again); the maps stay.
    pub fn detach(&mut self) {
        for (_, name, link) in self.attached.drain(..) {
            if let Ok(prog) = program(&mut self.ebpf, name) {
                let _ = prog.detach(link);
            }
        }
    }

    /// A handle on the tables for one worker (its own file descriptors).
    ///
    /// # Errors
    /// Out of file descriptors.
    pub fn tables(&self) -> Result<Tables, Error> {
        Ok(Tables {
            from_clients: HashMap::try_from(self.map("from_clients")?).map_err(|e| Error::new("from_clients", e))?,
            from_peers: HashMap::try_from(self.map("from_peers")?).map_err(|e| Error::new("from_peers", e))?,
            counters: PerCpuArray::try_from(self.map("counters")?).map_err(|e| Error::new("counters", e))?,
            clock: Clock::now(),
        })
    }

    /// What the program did with the packets that matched its tables, since
    /// it was loaded (summed over CPUs).
    ///
    /// # Errors
    /// The map could not be read.
    pub fn outcomes(&self) -> Result<Outcomes, Error> {
        let map: PerCpuArray<MapData, OutcomeCount> =
            PerCpuArray::try_from(self.map("outcomes")?).map_err(|e| Error::new("outcomes", e))?;
        let mut all = Outcomes::default();
        for i in 0..Outcomes::COUNT {
            let per_cpu = map.get(&i, 0).map_err(|e| Error::new("reading outcomes", e))?;
            let sum = per_cpu.iter().fold(OutcomeCount::default(), |a, c| OutcomeCount {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            });
            all.set(i, sum);
        }
        Ok(all)
    }

    /// Runs the relay program once on `frame` through BPF_PROG_TEST_RUN (in
    /// the calling thread's network namespace, arriving on interface
    /// `ifindex`): the XDP action and the frame as the program left it.
    ///
    /// # Errors
    /// The kernel refused the run.
    pub fn test_run(&mut self, frame: &[u8], ifindex: u32) -> Result<(u32, Vec<u8>), Error> {
        let prog: &mut Xdp = program(&mut self.ebpf, RELAY)?;
        let mut out = vec![0u8; frame.len() + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let size = u32::try_from(frame.len()).map_err(|e| Error::new("BPF_PROG_TEST_RUN", e))?;
        let ctx: Vec<u8> = [0, size, 0, ifindex, 0, 0].iter().flat_map(|v: &u32| v.to_ne_bytes()).collect();
        let mut opts = TestRunOptions::new();
        opts.ctx_in = Some(&ctx);
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let result = prog.test_run(opts).map_err(|e| Error::new("BPF_PROG_TEST_RUN", e))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// A new handle on map `name`, with its own file descriptor.
    fn map(&self, name: &'static str) -> Result<Map, Error> {
        let data = match self.ebpf.map(name) {
            Some(Map::HashMap(d) | Map::PerCpuArray(d)) => d,
            _ => return Err(Error::new(name, "no such map in the program")),
        };
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(|e| Error::new(name, e))?;
        let data = MapData::from_fd(fd).map_err(|e| Error::new(name, e))?;
        Map::from_map_data(data).map_err(|e| Error::new(name, e))
    }
}

impl Drop for FastPath {
    fn drop(&mut self) {
        self.detach();
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, Error> {
    let prog = ebpf.program_mut(name).ok_or_else(|| Error::new("loading", format!("no program {name}")))?;
    prog.try_into().map_err(|e: ProgramError| Error::new("loading", e))
}

/// The verifier's log is long; its last lines say why.
fn verifier(e: ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            format!("{io_error}; verifier: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        }
        e => e.to_string(),
    }
}

/// An attach failure with its causes spelled out, and the system call's
/// errno when one of them carries it.
fn attach_error(e: &ProgramError) -> Error {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut errno = None;
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        errno = errno.or_else(|| s.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error));
        source = s.source();
    }
    Error { what: "attaching", detail: text, errno }
}

/// CLOCK_MONOTONIC (what `bpf_ktime_get_ns` reads, and what [`Instant`] is
/// on Linux) against an [`Instant`] taken at the same moment.
#[derive(Debug, Clone, Copy)]
struct Clock {
    at: Instant,
    ns: u64,
}

impl Clock {
    fn now() -> Self {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
        let ns = u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec()).unwrap_or(0);
        Self { at: Instant::now(), ns }
    }

    fn ns(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.at) {
            Some(d) => self.ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            None => self.ns.saturating_sub(u64::try_from((self.at - t).as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

/// One worker's handle on the program's tables.
pub struct Tables {
    from_clients: HashMap<MapData, FlowKey, FlowOut>,
    from_peers: HashMap<MapData, FlowKey, FlowOut>,
    counters: PerCpuArray<MapData, FlowCounters>,
    clock: Clock,
}

impl fmt::Debug for Tables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tables").finish_non_exhaustive()
    }
}

impl Tables {
    /// Installs (or moves the deadline of) both entries of `c`.
    ///
    /// # Errors
    /// A table is full (`E2BIG`), or `c` mixes address families.
    pub fn install(&mut self, c: &Channel) -> Result<(), Error> {
        if !c.supported() {
            return Err(Error::new("installing", "the client and the relayed address differ in family"));
        }
        let deadline = self.clock.ns(c.until);
        self.from_clients
            .insert(c.client_key(), c.out_to_peer(deadline), 0)
            .map_err(|e| Error::new("from_clients", e))?;
        if let Err(e) = self.from_peers.insert(c.peer_key(), c.out_to_client(deadline), 0) {
            let _ = self.from_clients.remove(&c.client_key());
            return Err(Error::new("from_peers", e));
        }
        Ok(())
    }

    /// Removes both entries of `c` (those that are there).
    pub fn remove(&mut self, c: &Channel) {
        let _ = self.from_clients.remove(&c.client_key());
        let _ = self.from_peers.remove(&c.peer_key());
    }

    /// How many entries each table holds, `(from clients, from peers)`: a
    /// walk over the kernel's maps, for tests and tools.
    #[must_use]
    pub fn len(&self) -> (usize, usize) {
        (self.from_clients.keys().count(), self.from_peers.keys().count())
    }

    /// Slot `slot`'s counters, summed over CPUs.
    ///
    /// # Errors
    /// `slot` is out of range.
    pub fn counters(&self, slot: u32) -> Result<FlowCounters, Error> {
        let per_cpu = self.counters.get(&slot, 0).map_err(|e| Error::new("counters", e))?;
        Ok(per_cpu.iter().fold(FlowCounters::default(), |a, c| FlowCounters {
            packets: [a.packets[0] + c.packets[0], a.packets[1] + c.packets[1]],
            bytes: [a.bytes[0] + c.bytes[0], a.bytes[1] + c.bytes[1]],
        }))
    }

    /// Zeroes slot `slot`'s counters (before it is given to a new allocation).
    ///
    /// # Errors
    /// `slot` is out of range.
    pub fn reset(&mut self, slot: u32) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| Error::new(what, e))?;
        let zero =
            PerCpuValues::try_from(vec![FlowCounters::default(); cpus]).map_err(|e| Error::new("counters", e))?;
        self.counters.set(slot, zero, 0).map_err(|e| Error::new("counters", e))
    }
}
