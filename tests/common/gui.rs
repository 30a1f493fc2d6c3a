//! GTK helpers for the window's tests and benchmark (tests/gui.rs, benches/gui.rs): waiting
//! on GTK's main loop, finding a widget, saving what a window shows as a PNG.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tails_server_gui::adw::prelude::*;
use tails_server_gui::gtk::{self, glib};

/// Runs GTK's main loop until `done` holds; fails after a minute, saying what it waited for.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let context = glib::MainContext::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wakes the loop at least every 50 ms, so the deadline is noticed when nothing happens.
    let tick = glib::timeout_add_local(Duration::from_millis(50), || glib::ControlFlow::Continue);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        context.iteration(true);
    }
    tick.remove();
}

/// The widget named `name` (GtkWidget:name) under `root`.
pub fn find(root: &impl IsA<gtk::Widget>, name: &str) -> Option<gtk::Widget> {
    let root = root.as_ref();
    if root.widget_name() == name {
        return Some(root.clone());
    }
    let mut child = root.first_child();
    while let Some(widget) = child {
        if let Some(found) = find(&widget, name) {
            return Some(found);
        }
        child = widget.next_sibling();
    }
    None
}

/// Saves what `widget` (a window or a dialog) shows as target/gui-screens/NAME.png.
pub fn save_png(widget: &impl IsA<gtk::Widget>, name: &str) {
    let widget = widget.as_ref();
    let paintable = gtk::WidgetPaintable::new(Some(widget));
    let mut node = None;
    // A window just shown has drawn nothing yet: its first frame comes from the main loop.
    wait_until("the window to be drawn", || {
        let snapshot = gtk::Snapshot::new();
        paintable.snapshot(&snapshot, f64::from(widget.width()), f64::from(widget.height()));
        node = snapshot.to_node();
        node.is_some()
    });
    let node = node.unwrap();
    let renderer = widget.native().and_then(|n| n.renderer()).expect("the window has a renderer");
    let texture = renderer.render_texture(&node, None);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("gui-screens");
    std::fs::create_dir_all(&dir).unwrap();
    texture.save_to_png(dir.join(format!("{name}.png"))).unwrap();
}

/// Chooses `path` in the file chooser the window opened, as a person would: the desktop's
/// chooser is GTK's own dialog here (no portal on the test's display). Saving, the whole path
/// is typed in the name field, as a person may: the chooser loads its first folder after it
/// is shown, and a folder set meanwhile is replaced by it. Then Accept, once it shows the file.
#[allow(deprecated)] // GtkFileChooser is deprecated from GTK 4.10; the window is written against 4.8
pub fn choose_in_file_chooser(path: &std::path::Path) {
    let mut chooser = None;
    wait_until("the file chooser", || {
        chooser = gtk::Window::list_toplevels()
            .into_iter()
            .filter_map(|w| w.downcast::<gtk::FileChooserDialog>().ok())
            .find(|d| d.is_mapped());
        chooser.is_some()
    });
    let chooser = chooser.unwrap();
    if chooser.action() == gtk::FileChooserAction::Save {
        chooser.set_current_name(&path.to_string_lossy());
    } else {
        chooser.set_file(&gtk::gio::File::for_path(path)).unwrap();
    }
    wait_until("the chooser to show the file", || chooser.file().and_then(|f| f.path()).as_deref() == Some(path));
    chooser.response(gtk::ResponseType::Accept);
}
