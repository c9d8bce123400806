//! The `hostmesh` binary: everything is in the library; this only picks the allocator.

// A proxy allocates and frees small buffers and header maps per request, from every worker
// thread; mimalloc's thread-local free lists handle that pattern markedly better than glibc's
// malloc (which showed up at ~10 % of the agent's CPU in the proxy benchmark's profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hostmesh::cli::main()
}
