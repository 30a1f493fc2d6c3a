//! The desktop entry GNOME lists the window by: valid for desktop-file-validate, naming
//! the binary this crate builds and an icon this crate ships.

use std::path::Path;

#[test]
fn the_desktop_entry_is_valid_and_names_this_binary_and_icon() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let entry = data.join(format!("{}.desktop", tails_server_gui::APP_ID));
    let checked = std::process::Command::new("desktop-file-validate")
        .arg(&entry)
        .output()
        .expect("desktop-file-validate is installed (Debian: desktop-file-utils; ./scripts/deps)");
    let said = String::from_utf8_lossy(&checked.stdout).into_owned() + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success() && said.trim().is_empty(), "{}: {said}", entry.display());
    let text = std::fs::read_to_string(&entry).unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_tails-server-gui")).file_name().unwrap().to_str().unwrap();
    assert!(text.lines().any(|l| l == format!("Exec={binary}")), "{text}");
    let icon = text.lines().find_map(|l| l.strip_prefix("Icon=")).unwrap();
    let svg = std::fs::read_to_string(data.join(format!("{icon}.svg"))).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "the icon is an SVG");
}
