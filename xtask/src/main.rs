//! `cargo xtask templates`: build every template component into `target/templates/`.

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
        _ => {
            eprintln!("usage: cargo xtask templates   (build all template components into target/templates/)");
            std::process::ExitCode::from(2)
        }
    }
}
