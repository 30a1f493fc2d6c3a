//! Boots the image once and runs each argument as a root command over the remote shell,
//! printing rc, stdout and stderr: a tool for looking inside the stand-in.
//!
//!     cargo run --example vm-run -- [--locked] 'cmd 1' 'cmd 2' ...
use vm_tests::{BootOptions, Vm, VmConfig};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let locked = args.first().map(|a| a == "--locked").unwrap_or(false);
    if locked {
        args.remove(0);
    }
    let mut vm = Vm::new("vm-run", VmConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    vm.boot(if locked { BootOptions::locked() } else { BootOptions::unlocked() }).unwrap_or_else(|e| panic!("{e}"));
    for cmd in &args {
        match vm.sh("root", cmd) {
            Ok(o) => println!("$ {cmd}\nrc {}\n{}{}", o.rc, o.stdout, o.stderr),
            Err(e) => println!("$ {cmd}\nerror: {e}"),
        }
    }
    vm.pass();
}
