//! The `hostmesh` binary: everything is in the library; this only picks the allocator and how it
//! takes memory from the kernel.

// A proxy allocates and frees small buffers and header maps per request, from every worker
// thread; mimalloc's thread-local free lists handle that pattern markedly better than glibc's
// malloc (which showed up at ~10 % of the agent's CPU in the proxy benchmark's profile).
//
// Without transparent huge pages (the `no_thp` feature, and the prctl below): mimalloc asks for
// them on its arenas, and then every 2 MiB region the agent touches at all is resident whole.
// An idle agent held 14 of its 17 MiB of heap in seven huge pages, for a few MiB of data.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Where the system's THP mode is "always" (RHEL's default), huge pages come without asking;
    // this turns them off for the agent's later page faults (and the health checks it runs).
    // Failing only costs memory.
    let _ = nix::sys::prctl::set_thp_disable(true);
    hostmesh::cli::main()
}
