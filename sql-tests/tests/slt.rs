//! `cargo test -p eddy-sql-tests`: every `sql-tests/slt/**/*.slt` file, each against its own
//! server. A file name filter may be given: `cargo test -p eddy-sql-tests -- windows`.

use std::path::{Path, PathBuf};

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

fn main() -> std::process::ExitCode {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut files = Vec::new();
    let root = eddy_sql_tests::crate_dir();
    slt_files(&root.join("slt"), &mut files);
    if files.is_empty() {
        eprintln!("no .slt files under {}", root.join("slt").display());
        return std::process::ExitCode::FAILURE;
    }
    files.sort();
    files.retain(|f| filter.is_empty() || filter.iter().any(|p| f.to_string_lossy().contains(p)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        let result = runtime.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(120),
                eddy_sql_tests::run_file(file),
            )
            .await
            .unwrap_or_else(|_| Err("timed out after 120 s".to_string()))
        });
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e}");
            }
        }
    }
    println!();
    println!("slt: {passed} passed, {failed} failed");
    if failed > 0 || files.is_empty() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
