//! The `ckptdb` command-line tool; see `ckptdb --help`.

fn main() {
    std::process::exit(ckptdb::cli::main());
}
