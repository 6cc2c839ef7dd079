//! Builds the XDP program (bpf/relay.bpf.c) with clang into OUT_DIR and
//! says whether it did: without clang or libbpf's headers (or with
//! `IP2P_XDP=off`), the crate builds without a program and the relay runs
//! with the fast path off. `xdp/toolchain.sh` installs what it needs.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(ip2p_xdp_program)");
    for file in ["bpf/relay.bpf.c", "bpf/ip2p.h"] {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-env-changed=IP2P_XDP");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("ip2p_xdp.o");
    if env::var("IP2P_XDP").is_ok_and(|v| v == "off") {
        println!("cargo:warning=IP2P_XDP=off: building without the XDP fast path");
        return;
    }
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // Debian keeps the kernel's asm/ headers under the multiarch directory.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let built = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-Wall",
            "-Werror",
            &multiarch,
            "-c",
            "bpf/relay.bpf.c",
            "-o",
        ])
        .arg(&out)
        .output();
    match built {
        Ok(o) if o.status.success() => println!("cargo:rustc-cfg=ip2p_xdp_program"),
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            let first = why.lines().next().unwrap_or("no output");
            println!("cargo:warning=XDP fast path not built ({clang} failed: {first}); run xdp/toolchain.sh");
        }
        Err(e) => println!("cargo:warning=XDP fast path not built ({clang}: {e}); run xdp/toolchain.sh"),
    }
}
