//! `cargo xtask templates`: build every template component into `target/templates/`.
//! `cargo xtask load [--seconds N] [--tags 1,3,10]`: the whole-server load run (BENCHMARKS.md).

fn main() -> std::process::ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "templates" => match xtask::build_templates(&xtask::workspace_root()) {
            Ok(dir) => {
                println!("templates built in {}", dir.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        "load" => match xtask::load(&xtask::workspace_root(), std::env::args().skip(2).collect()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask templates   (build all template components into target/templates/)\n       \
                 cargo xtask load [--seconds N] [--tags 1,3,10]   (the whole-server load run, see BENCHMARKS.md)"
            );
            std::process::ExitCode::from(2)
        }
    }
}
