//! Builds the small C++ shim for the librados calls the C API lacks (sparse reads, snapshot
//! sets, watcher lists, object-list cursors) and links librados (Debian: librados-dev and
//! libradospp-dev).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.cc");
    let include_dirs = ["/usr/include", "/usr/local/include"];
    let found = |header: &str| {
        include_dirs
            .iter()
            .any(|d| Path::new(d).join(header).exists())
    };
    if !found("rados/librados.h") || !found("rados/librados.hpp") {
        println!(
            "cargo:warning=librados headers not found: install librados-dev and libradospp-dev \
             (apt-get install librados-dev libradospp-dev) to build the rados backend"
        );
    }
    cc::Build::new()
        .cpp(true)
        .file("shim/shim.cc")
        .flag("-std=c++17")
        .flag_if_supported("-Wno-deprecated-declarations")
        .compile("rbdx_rados_shim");
    println!("cargo:rustc-link-lib=dylib=rados");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}
