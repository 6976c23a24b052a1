//! Proof of ABI against Xen's own headers (Debian's `libxen-dev`).
//!
//! `tests/c/ring_driver.c` is compiled here against the installed `xen/io/ring.h`,
//! `xen/io/netif.h` and `xen/io/pvcalls.h`, and driven by the same command scripts as a Rust
//! driver over `netstage_ring`. The tests show that
//!
//! - sizes, offsets and constants agree;
//! - the same random operation sequence run by the C macros and by the Rust code leaves the
//!   shared memory byte-for-byte identical and gives the same outputs, including every
//!   notify / no-notify decision, for single- and multi-page rings and across the 2^32 index
//!   wrap;
//! - C and Rust interoperate on one shared mapping: C produces and Rust consumes, and the
//!   reverse, for request/response rings and for flex data rings.
//!
//! Nothing from the headers is copied into the repository; a missing header fails the tests
//! with the name of the package to install.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use netstage_ring::flex::{self, End, FlexConsumer, FlexProducer};
use netstage_ring::netif::*;
use netstage_ring::sring::{self, BackRing, FrontRing, RingProtocol};
use netstage_ring::SharedMem;

const HEADERS: &[&str] = &["xen/io/ring.h", "xen/io/netif.h", "xen/io/pvcalls.h"];

/// Compiles the C driver once per test binary.
fn driver() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/ring_driver.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ring_driver");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
        let res = Command::new(&cc)
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-o"])
            .arg(&out)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}; install gcc"));
        if !res.status.success() {
            let err = String::from_utf8_lossy(&res.stderr);
            let missing: Vec<_> = HEADERS
                .iter()
                .filter(|h| !Path::new("/usr/include").join(h).exists())
                .collect();
            if !missing.is_empty() || err.contains("xen/") && err.contains("No such file") {
                panic!(
                    "the Xen public headers {missing:?} are missing: install Debian's \
                     `libxen-dev` (apt-get install libxen-dev), or run ./scripts/test as root, \
                     which installs it.\ncompiler said:\n{err}"
                );
            }
            panic!("compiling {} failed:\n{err}", src.display());
        }
        out
    })
}

/// The C driver as a child process mapping `file`.
struct CDriver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CDriver {
    fn spawn(file: &Path, len: usize) -> CDriver {
        let mut child = Command::new(driver())
            .arg(file)
            .arg(len.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the C ring driver");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        CDriver {
            child,
            stdin,
            stdout,
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to C driver");
        self.stdin.flush().expect("flush");
        let mut out = String::new();
        self.stdout.read_line(&mut out).expect("read from C driver");
        assert!(!out.is_empty(), "C driver exited on `{line}`");
        out.trim_end().to_string()
    }

    fn quit(mut self) {
        writeln!(self.stdin, "quit").expect("quit");
        drop(self.stdin);
        let st = self.child.wait().expect("wait");
        assert!(st.success(), "C driver failed: {st}");
    }
}

/// Request/response formatting of the script protocol.
trait ScriptProto: RingProtocol {
    fn req(v: &[i64]) -> Self::Request;
    fn req_str(r: &Self::Request) -> String;
    fn rsp(v: &[i64]) -> Self::Response;
    fn rsp_str(r: &Self::Response) -> String;
}

impl ScriptProto for TxRing {
    fn req(v: &[i64]) -> NetifTxRequest {
        NetifTxRequest {
            gref: v[0] as u32,
            offset: v[1] as u16,
            flags: v[2] as u16,
            id: v[3] as u16,
            size: v[4] as u16,
        }
    }
    fn req_str(r: &NetifTxRequest) -> String {
        format!(
            "req {} {} {} {} {}",
            r.gref, r.offset, r.flags, r.id, r.size
        )
    }
    fn rsp(v: &[i64]) -> NetifTxResponse {
        NetifTxResponse {
            id: v[0] as u16,
            status: v[1] as i16,
        }
    }
    fn rsp_str(r: &NetifTxResponse) -> String {
        format!("rsp {} {}", r.id, r.status)
    }
}

impl ScriptProto for RxRing {
    fn req(v: &[i64]) -> NetifRxRequest {
        NetifRxRequest {
            id: v[0] as u16,
            pad: 0,
            gref: v[1] as u32,
        }
    }
    fn req_str(r: &NetifRxRequest) -> String {
        format!("req {} {}", r.id, r.gref)
    }
    fn rsp(v: &[i64]) -> NetifRxResponse {
        NetifRxResponse {
            id: v[0] as u16,
            offset: v[1] as u16,
            flags: v[2] as u16,
            status: v[3] as i16,
        }
    }
    fn rsp_str(r: &NetifRxResponse) -> String {
        format!("rsp {} {} {} {}", r.id, r.offset, r.flags, r.status)
    }
}

struct RustRings<P: RingProtocol> {
    front: Option<FrontRing<P>>,
    back: Option<BackRing<P>>,
}

fn flag(b: bool) -> u8 {
    u8::from(b)
}

impl<P: ScriptProto> RustRings<P> {
    fn cmd(&mut self, mem: &SharedMem, cmd: &str, v: &[i64]) -> String {
        let f = || "front not initialised".to_string();
        let b = || "back not attached".to_string();
        let r: Result<String, String> = (|| {
            Ok(match cmd {
                "init" => {
                    let ring = FrontRing::<P>::init_at(
                        mem.sub(0, v[1] as usize * 4096).unwrap(),
                        v[2] as u32,
                    )
                    .map_err(|e| e.to_string())?;
                    let s = format!("ok {}", ring.size());
                    self.front = Some(ring);
                    s
                }
                "attach" => {
                    let ring = BackRing::<P>::attach(mem.sub(0, v[1] as usize * 4096).unwrap())
                        .map_err(|e| e.to_string())?;
                    let s = format!("ok {}", ring.size());
                    self.back = Some(ring);
                    s
                }
                "put_req" => {
                    let ring = self.front.as_mut().ok_or_else(f)?;
                    ring.put_request(&P::req(v)).map_err(|e| e.to_string())?;
                    "ok".into()
                }
                "push_req" => {
                    let ring = self.front.as_mut().ok_or_else(f)?;
                    format!(
                        "notify {}",
                        flag(
                            ring.push_requests_and_check_notify()
                                .map_err(|e| e.to_string())?
                        )
                    )
                }
                "take_rsp" => {
                    let ring = self.front.as_mut().ok_or_else(f)?;
                    ring.refresh_responses().map_err(|e| e.to_string())?;
                    match ring.take_response().map_err(|e| e.to_string())? {
                        Some(r) => P::rsp_str(&r),
                        None => "none".into(),
                    }
                }
                "final_rsp" => {
                    let ring = self.front.as_mut().ok_or_else(f)?;
                    format!(
                        "work {}",
                        flag(
                            ring.final_check_for_responses()
                                .map_err(|e| e.to_string())?
                        )
                    )
                }
                "free" => {
                    let ring = self.front.as_mut().ok_or_else(f)?;
                    format!("free {}", ring.free_requests())
                }
                "take_req" => {
                    let ring = self.back.as_mut().ok_or_else(b)?;
                    ring.refresh_requests().map_err(|e| e.to_string())?;
                    match ring.take_request().map_err(|e| e.to_string())? {
                        Some(r) => P::req_str(&r),
                        None => "none".into(),
                    }
                }
                "put_rsp" => {
                    let ring = self.back.as_mut().ok_or_else(b)?;
                    ring.put_response(&P::rsp(v)).map_err(|e| e.to_string())?;
                    "ok".into()
                }
                "push_rsp" => {
                    let ring = self.back.as_mut().ok_or_else(b)?;
                    format!(
                        "notify {}",
                        flag(
                            ring.push_responses_and_check_notify()
                                .map_err(|e| e.to_string())?
                        )
                    )
                }
                "final_req" => {
                    let ring = self.back.as_mut().ok_or_else(b)?;
                    format!(
                        "work {}",
                        flag(ring.final_check_for_requests().map_err(|e| e.to_string())?)
                    )
                }
                other => return Err(format!("unknown command {other}")),
            })
        })();
        r.unwrap_or_else(|e| format!("error {e}"))
    }
}

/// Same bytes as the C driver's producer pattern.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|k| (seed as usize + k * 31 + (k >> 8)) as u8)
        .collect()
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(1469598103934665603u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(1099511628211)
    })
}

/// The Rust side of the command protocol.
struct RustDriver {
    mem: SharedMem,
    tx: RustRings<TxRing>,
    rx: RustRings<RxRing>,
    ring_type: i64,
    flex_order: u32,
    front: Option<(FlexProducer, FlexConsumer)>,
    back: Option<(FlexProducer, FlexConsumer)>,
}

impl RustDriver {
    fn new(mem: SharedMem) -> Self {
        RustDriver {
            mem,
            tx: RustRings {
                front: None,
                back: None,
            },
            rx: RustRings {
                front: None,
                back: None,
            },
            ring_type: 0,
            flex_order: 0,
            front: None,
            back: None,
        }
    }

    fn flex_views(&self, end: End) -> (FlexProducer, FlexConsumer) {
        let intf = self.mem.sub(0, 4096).unwrap();
        let data = self.mem.sub(4096, 4096 << self.flex_order).unwrap();
        flex::open(end, &intf, &data, self.flex_order).expect("open flex views")
    }

    fn cmd(&mut self, line: &str) -> String {
        let mut it = line.split_whitespace();
        let cmd = it.next().unwrap_or("");
        let v: Vec<i64> = it
            .map(|x| x.parse().expect("number"))
            .chain([0; 6])
            .collect();
        match cmd {
            "sync" => "ok".into(),
            "finit" => {
                self.flex_order = v[0] as u32;
                let refs: Vec<u32> = (0..1u32 << self.flex_order).map(|k| 8 + k).collect();
                flex::init_intf(&self.mem.sub(0, 4096).unwrap(), self.flex_order, &refs).unwrap();
                self.front = Some(self.flex_views(End::Frontend));
                "ok".into()
            }
            "fopen" => {
                self.flex_order = v[0] as u32;
                self.back = Some(self.flex_views(End::Backend));
                "ok".into()
            }
            "fwrite" => {
                let inbound = v[0] == 1;
                let views = if inbound {
                    &mut self.back
                } else {
                    &mut self.front
                };
                let (p, _) = views.as_mut().expect("flex views");
                let bytes = pattern(v[1] as usize, v[2] as u32);
                format!("wrote {}", p.write(&bytes).expect("flex write"))
            }
            "fread" => {
                let inbound = v[0] == 1;
                let views = if inbound {
                    &mut self.front
                } else {
                    &mut self.back
                };
                let (_, c) = views.as_mut().expect("flex views");
                let mut buf = vec![0u8; v[1] as usize];
                let n = c.read(&mut buf).expect("flex read");
                c.release().expect("release");
                format!("read {n} {:016x}", fnv(&buf[..n]))
            }
            _ => {
                if cmd == "init" || cmd == "attach" {
                    self.ring_type = v[0];
                }
                match self.ring_type {
                    1 => self.tx.cmd(&self.mem, cmd, &v),
                    2 => self.rx.cmd(&self.mem, cmd, &v),
                    _ => "error no ring initialised".into(),
                }
            }
        }
    }
}

/// Which side executes a command in a mixed run.
fn is_front(line: &str) -> bool {
    let mut it = line.split_whitespace();
    let cmd = it.next().unwrap_or("");
    let arg: i64 = it.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    match cmd {
        "init" | "put_req" | "push_req" | "take_rsp" | "final_rsp" | "free" | "finit" => true,
        "fwrite" => arg == 0,
        "fread" => arg == 1,
        _ => false,
    }
}

/// A shared file mapped into this process as a `SharedMem`.
fn map_file(path: &Path, len: usize) -> SharedMem {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open shared file");
    file.set_len(len as u64).expect("size shared file");
    // SAFETY: the file is private to this test; the C driver maps it too but only ever
    // accesses it as raw shared memory, like a peer domain.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap shared file");
    let base = NonNull::new(map.as_mut_ptr()).expect("non-null mapping");
    // SAFETY: `map` is a live read-write mapping of `len` bytes and is moved into the owner,
    // which keeps it mapped as long as the window; we never create references into it.
    unsafe { SharedMem::from_raw_parts(base, len, true, Arc::new(map)) }
}

fn read_mem(m: &SharedMem) -> Vec<u8> {
    let mut v = vec![0u8; m.len()];
    m.read_at(0, &mut v).unwrap();
    v
}

/// Random legal ring scripts: a model of the indexes keeps every operation legal for the
/// C macros (which do not validate).
fn ring_script(
    rng: &mut fastrand::Rng,
    code: i64,
    pages: u32,
    start: u32,
    ops: usize,
) -> Vec<String> {
    let bytes = pages as usize * 4096;
    let size = u64::from(if code == 1 {
        sring::ring_size::<TxRing>(bytes)
    } else {
        sring::ring_size::<RxRing>(bytes)
    });
    let mut s = vec![
        format!("init {code} {pages} {start}"),
        format!("attach {code} {pages}"),
    ];
    let (mut rpp, mut rp, mut rc, mut spp, mut sp, mut sc) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut mode = 0u32; // phases: bias towards filling, then towards draining
    for i in 0..ops {
        if i % 97 == 0 {
            mode = rng.u32(0..3);
        }
        let roll = rng.u32(0..100);
        let op = match (mode, roll) {
            (0, 0..=39) | (2, 0..=19) => "put_req",
            (_, 0..=29) => "put_req",
            (_, 30..=39) => "push_req",
            (_, 40..=54) => "take_req",
            (_, 55..=69) => "put_rsp",
            (_, 70..=77) => "push_rsp",
            (_, 78..=89) => "take_rsp",
            (_, 90..=94) => "final_req",
            (_, 95..=98) => "final_rsp",
            _ => "free",
        };
        match op {
            "put_req" if rpp - sc < size => {
                rpp += 1;
                s.push(if code == 1 {
                    format!(
                        "put_req {} {} {} {} {}",
                        rng.u32(..),
                        rng.u16(..),
                        rng.u16(..),
                        rng.u16(..),
                        rng.u16(..)
                    )
                } else {
                    format!("put_req {} {}", rng.u16(..), rng.u32(..))
                });
            }
            "put_req" => {}
            "push_req" => {
                rp = rpp;
                s.push(op.into());
            }
            "take_req" => {
                if rp > rc && rc - spp < size {
                    rc += 1;
                }
                s.push(op.into());
            }
            "put_rsp" if spp < rc => {
                spp += 1;
                s.push(if code == 1 {
                    format!("put_rsp {} {}", rng.u16(..), rng.i16(..))
                } else {
                    format!(
                        "put_rsp {} {} {} {}",
                        rng.u16(..),
                        rng.u16(..),
                        rng.u16(..),
                        rng.i16(..)
                    )
                });
            }
            "put_rsp" => {}
            "push_rsp" => {
                sp = spp;
                s.push(op.into());
            }
            "take_rsp" => {
                if sp > sc {
                    sc += 1;
                }
                s.push(op.into());
            }
            other => s.push(other.into()),
        }
        if i % 250 == 249 {
            s.push("sync".into());
        }
    }
    s.push("sync".into());
    s
}

fn flex_script(rng: &mut fastrand::Rng, order: u32, ops: usize) -> Vec<String> {
    let size = flex::flex_ring_size(order);
    let mut s = vec![format!("finit {order}"), format!("fopen {order}")];
    for i in 0..ops {
        let len = match rng.u32(0..8) {
            0 => 0,
            1 => rng.usize(1..8),
            2 => 64,
            3 => 1500,
            4 => size - 1,
            5 => size,
            6 => size + 5,
            _ => rng.usize(0..=size),
        };
        let dir = rng.u32(0..2);
        if rng.bool() {
            s.push(format!("fwrite {dir} {len} {}", rng.u32(0..256)));
        } else {
            s.push(format!("fread {dir} {len}"));
        }
        if i % 50 == 49 {
            s.push("sync".into());
        }
    }
    s.push("sync".into());
    s
}

fn tmpfile(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_abi");
    fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_file(&p);
    p
}

/// Runs `script` three ways - all C, all Rust, and mixed on one mapping (front ops in Rust
/// and back ops in C if `rust_front`, else the reverse) - and checks outputs and bytes.
fn run_three_ways(name: &str, script: &[String], len: usize) {
    // All C.
    let c_path = tmpfile(&format!("{name}-c"));
    let mut c = CDriver::spawn(&c_path, len);
    // All Rust.
    let r_mem = SharedMem::new_zeroed(len);
    let mut r = RustDriver::new(r_mem.clone());
    // Mixed, both orientations.
    let mixed: Vec<(bool, PathBuf)> = [true, false]
        .into_iter()
        .map(|rf| (rf, tmpfile(&format!("{name}-mixed-{rf}"))))
        .collect();
    let mut mixed_drivers: Vec<(bool, CDriver, RustDriver, SharedMem)> = mixed
        .iter()
        .map(|(rf, p)| {
            let cd = CDriver::spawn(p, len);
            // Let the C driver create and size the file before mapping it here.
            let mut cd = cd;
            cd.cmd("sync");
            let m = map_file(p, len);
            (*rf, cd, RustDriver::new(m.clone()), m)
        })
        .collect();

    for (n, line) in script.iter().enumerate() {
        let out_c = c.cmd(line);
        let out_r = r.cmd(line);
        assert_eq!(
            out_c, out_r,
            "{name}: step {n} `{line}`: C and Rust disagree"
        );
        assert!(
            !out_c.starts_with("error"),
            "{name}: step {n} `{line}`: {out_c}"
        );
        for (rust_front, cd, rd, _) in mixed_drivers.iter_mut() {
            let out_m = if is_front(line) == *rust_front {
                rd.cmd(line)
            } else {
                cd.cmd(line)
            };
            assert_eq!(
                out_m, out_r,
                "{name}: step {n} `{line}`: mixed run (Rust front: {rust_front}) differs"
            );
        }
        if line == "sync" {
            let c_bytes = fs::read(&c_path).unwrap();
            let r_bytes = read_mem(&r_mem);
            assert!(
                c_bytes == r_bytes,
                "{name}: step {n}: C and Rust memory differ"
            );
            for (rust_front, _, _, m) in &mixed_drivers {
                assert!(
                    read_mem(m) == r_bytes,
                    "{name}: step {n}: mixed memory (Rust front: {rust_front}) differs"
                );
            }
        }
    }
    c.quit();
    for (_, cd, _, _) in mixed_drivers {
        cd.quit();
    }
    let _ = fs::remove_file(&c_path);
    for (_, p) in mixed {
        let _ = fs::remove_file(p);
    }
}

#[test]
fn sizes_offsets_and_constants_match_the_headers() {
    let out = Command::new(driver())
        .arg("--abi")
        .output()
        .expect("run driver");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    use std::mem::{offset_of, size_of};
    let flex_sizes: Vec<(String, usize)> = (0..=9)
        .map(|o| (format!("flexsize {o}"), flex::flex_ring_size(o)))
        .collect();
    let mut expected: Vec<(String, i64)> = vec![
        ("sizeof netif_tx_request", size_of::<NetifTxRequest>()),
        (
            "offsetof netif_tx_request.gref",
            offset_of!(NetifTxRequest, gref),
        ),
        (
            "offsetof netif_tx_request.offset",
            offset_of!(NetifTxRequest, offset),
        ),
        (
            "offsetof netif_tx_request.flags",
            offset_of!(NetifTxRequest, flags),
        ),
        (
            "offsetof netif_tx_request.id",
            offset_of!(NetifTxRequest, id),
        ),
        (
            "offsetof netif_tx_request.size",
            offset_of!(NetifTxRequest, size),
        ),
        ("sizeof netif_tx_response", size_of::<NetifTxResponse>()),
        (
            "offsetof netif_tx_response.id",
            offset_of!(NetifTxResponse, id),
        ),
        (
            "offsetof netif_tx_response.status",
            offset_of!(NetifTxResponse, status),
        ),
        ("sizeof netif_rx_request", size_of::<NetifRxRequest>()),
        (
            "offsetof netif_rx_request.id",
            offset_of!(NetifRxRequest, id),
        ),
        (
            "offsetof netif_rx_request.gref",
            offset_of!(NetifRxRequest, gref),
        ),
        ("sizeof netif_rx_response", size_of::<NetifRxResponse>()),
        (
            "offsetof netif_rx_response.id",
            offset_of!(NetifRxResponse, id),
        ),
        (
            "offsetof netif_rx_response.offset",
            offset_of!(NetifRxResponse, offset),
        ),
        (
            "offsetof netif_rx_response.flags",
            offset_of!(NetifRxResponse, flags),
        ),
        (
            "offsetof netif_rx_response.status",
            offset_of!(NetifRxResponse, status),
        ),
        ("sizeof netif_extra_info", size_of::<NetifExtraInfo>()),
        (
            "offsetof netif_extra_info.type",
            offset_of!(NetifExtraInfo, ty),
        ),
        (
            "offsetof netif_extra_info.flags",
            offset_of!(NetifExtraInfo, flags),
        ),
        // The union `u` starts at 2; our encoder puts each member at these offsets.
        (
            "offsetof netif_extra_info.u.gso.size",
            offset_of!(NetifExtraInfo, u),
        ),
        (
            "offsetof netif_extra_info.u.gso.type",
            offset_of!(NetifExtraInfo, u) + 2,
        ),
        (
            "offsetof netif_extra_info.u.gso.features",
            offset_of!(NetifExtraInfo, u) + 4,
        ),
        (
            "offsetof netif_extra_info.u.mcast.addr",
            offset_of!(NetifExtraInfo, u),
        ),
        (
            "offsetof netif_extra_info.u.hash.type",
            offset_of!(NetifExtraInfo, u),
        ),
        (
            "offsetof netif_extra_info.u.hash.algorithm",
            offset_of!(NetifExtraInfo, u) + 1,
        ),
        (
            "offsetof netif_extra_info.u.hash.value",
            offset_of!(NetifExtraInfo, u) + 2,
        ),
        ("offsetof netif_tx_sring.req_prod", sring::REQ_PROD_OFFSET),
        ("offsetof netif_tx_sring.req_event", sring::REQ_EVENT_OFFSET),
        ("offsetof netif_tx_sring.rsp_prod", sring::RSP_PROD_OFFSET),
        ("offsetof netif_tx_sring.rsp_event", sring::RSP_EVENT_OFFSET),
        ("offsetof netif_tx_sring.pvt", sring::PVT_OFFSET),
        ("offsetof netif_tx_sring.__pad", sring::PVT_OFFSET + 4),
        ("offsetof netif_tx_sring.ring", sring::ENTRIES_OFFSET),
        ("offsetof netif_rx_sring.ring", sring::ENTRIES_OFFSET),
        ("entry netif_tx", sring::entry_size::<TxRing>()),
        ("entry netif_rx", sring::entry_size::<RxRing>()),
        (
            "ringsize netif_tx 1",
            sring::ring_size::<TxRing>(4096) as usize,
        ),
        (
            "ringsize netif_tx 2",
            sring::ring_size::<TxRing>(8192) as usize,
        ),
        (
            "ringsize netif_tx 4",
            sring::ring_size::<TxRing>(16384) as usize,
        ),
        (
            "ringsize netif_rx 1",
            sring::ring_size::<RxRing>(4096) as usize,
        ),
        (
            "ringsize netif_rx 2",
            sring::ring_size::<RxRing>(8192) as usize,
        ),
        (
            "ringsize netif_rx 4",
            sring::ring_size::<RxRing>(16384) as usize,
        ),
        ("sizeof pvcalls_data_intf", flex::REF_OFFSET),
        ("offsetof pvcalls_data_intf.in_cons", flex::IN_CONS_OFFSET),
        ("offsetof pvcalls_data_intf.in_prod", flex::IN_PROD_OFFSET),
        ("offsetof pvcalls_data_intf.in_error", flex::IN_ERROR_OFFSET),
        ("offsetof pvcalls_data_intf.out_cons", flex::OUT_CONS_OFFSET),
        ("offsetof pvcalls_data_intf.out_prod", flex::OUT_PROD_OFFSET),
        (
            "offsetof pvcalls_data_intf.out_error",
            flex::OUT_ERROR_OFFSET,
        ),
        (
            "offsetof pvcalls_data_intf.ring_order",
            flex::RING_ORDER_OFFSET,
        ),
        ("offsetof pvcalls_data_intf.ref", flex::REF_OFFSET),
        ("const XEN_NETIF_NR_SLOTS_MIN", XEN_NETIF_NR_SLOTS_MIN),
        ("const XEN_NETIF_MAX_TX_SIZE", XEN_NETIF_MAX_TX_SIZE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v as i64))
    .chain(flex_sizes.into_iter().map(|(k, v)| (k, v as i64)))
    .collect();
    let consts: Vec<(&str, i64)> = vec![
        ("NETTXF_csum_blank", i64::from(TxFlags::CSUM_BLANK.bits())),
        (
            "NETTXF_data_validated",
            i64::from(TxFlags::DATA_VALIDATED.bits()),
        ),
        ("NETTXF_more_data", i64::from(TxFlags::MORE_DATA.bits())),
        ("NETTXF_extra_info", i64::from(TxFlags::EXTRA_INFO.bits())),
        (
            "NETRXF_data_validated",
            i64::from(RxFlags::DATA_VALIDATED.bits()),
        ),
        ("NETRXF_csum_blank", i64::from(RxFlags::CSUM_BLANK.bits())),
        ("NETRXF_more_data", i64::from(RxFlags::MORE_DATA.bits())),
        ("NETRXF_extra_info", i64::from(RxFlags::EXTRA_INFO.bits())),
        ("NETRXF_gso_prefix", i64::from(RxFlags::GSO_PREFIX.bits())),
        ("NETIF_RSP_DROPPED", i64::from(NETIF_RSP_DROPPED)),
        ("NETIF_RSP_ERROR", i64::from(NETIF_RSP_ERROR)),
        ("NETIF_RSP_OKAY", i64::from(NETIF_RSP_OKAY)),
        ("NETIF_RSP_NULL", i64::from(NETIF_RSP_NULL)),
        (
            "XEN_NETIF_EXTRA_TYPE_NONE",
            i64::from(XEN_NETIF_EXTRA_TYPE_NONE),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_GSO",
            i64::from(XEN_NETIF_EXTRA_TYPE_GSO),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_MCAST_ADD",
            i64::from(XEN_NETIF_EXTRA_TYPE_MCAST_ADD),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_MCAST_DEL",
            i64::from(XEN_NETIF_EXTRA_TYPE_MCAST_DEL),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_HASH",
            i64::from(XEN_NETIF_EXTRA_TYPE_HASH),
        ),
        (
            "XEN_NETIF_EXTRA_TYPE_MAX",
            i64::from(XEN_NETIF_EXTRA_TYPE_MAX),
        ),
        (
            "XEN_NETIF_EXTRA_FLAG_MORE",
            i64::from(XEN_NETIF_EXTRA_FLAG_MORE),
        ),
        ("XEN_NETIF_GSO_TYPE_NONE", 0),
        ("XEN_NETIF_GSO_TYPE_TCPV4", GsoType::TcpV4 as i64),
        ("XEN_NETIF_GSO_TYPE_TCPV6", GsoType::TcpV6 as i64),
    ];
    expected.extend(consts.into_iter().map(|(k, v)| (format!("const {k}"), v)));

    let got: std::collections::HashMap<String, i64> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "every C fact is checked:\n{text}"
    );
    for (k, v) in &expected {
        assert_eq!(
            got.get(k),
            Some(v),
            "{k}: C header says {:?}, Rust says {v}",
            got.get(k)
        );
    }
}

#[test]
fn rings_are_byte_identical_to_the_c_macros() {
    let mut rng = fastrand::Rng::with_seed(0x6e65_7473);
    let configs = [(1i64, 1u32), (2, 1), (1, 2), (2, 4)];
    for (code, pages) in configs {
        for start in [0u32, u32::MAX - 40, u32::MAX - 700, rng.u32(..)] {
            let script = ring_script(&mut rng, code, pages, start, 3000);
            run_three_ways(
                &format!("ring-{code}-{pages}p-{start}"),
                &script,
                pages as usize * 4096,
            );
        }
    }
}

#[test]
fn flex_rings_are_byte_identical_to_the_c_macros() {
    let mut rng = fastrand::Rng::with_seed(0x666c_6578);
    for order in [0u32, 1, 3] {
        for _ in 0..3 {
            let script = flex_script(&mut rng, order, 600);
            run_three_ways(&format!("flex-{order}"), &script, 4096 + (4096 << order));
        }
    }
}

#[test]
fn flex_indexes_across_the_wrap_match_c() {
    // Start both directions near 2^32 by setting the indexes before either side opens.
    let order = 1;
    let len = 4096 + (4096 << order);
    let path = tmpfile("flex-wrap");
    let mut c = CDriver::spawn(&path, len);
    c.cmd("sync");
    let mem = map_file(&path, len);
    let mut r = RustDriver::new(mem.clone());
    assert_eq!(r.cmd("finit 1"), "ok");
    let start = u32::MAX - 3000;
    for off in [0usize, 4, 64, 68] {
        mem.write_obj(off, &start).unwrap();
    }
    // Reopen the Rust views at the new indexes; C reads them from memory on every command.
    r.front = Some(r.flex_views(End::Frontend));
    r.back = Some(r.flex_views(End::Backend));
    assert_eq!(c.cmd("fopen 1"), "ok");
    for i in 0..200u32 {
        let n = 1 + (i as usize * 379) % 4096;
        // Rust front produces, C back consumes; C back produces, Rust front consumes.
        let w = r.cmd(&format!("fwrite 0 {n} {i}"));
        let rd = c.cmd(&format!("fread 0 {n}"));
        let expect = pattern(w[6..].parse().unwrap(), i);
        assert_eq!(rd, format!("read {} {:016x}", expect.len(), fnv(&expect)));
        let w = c.cmd(&format!("fwrite 1 {n} {i}"));
        let rd = r.cmd(&format!("fread 1 {n}"));
        let expect = pattern(w[6..].parse().unwrap(), i);
        assert_eq!(rd, format!("read {} {:016x}", expect.len(), fnv(&expect)));
    }
    let out_prod: u32 = mem.read_obj(68).unwrap();
    assert!(
        out_prod < start,
        "the out producer wrapped past 2^32 ({out_prod})"
    );
    c.quit();
    let _ = fs::remove_file(path);
}
