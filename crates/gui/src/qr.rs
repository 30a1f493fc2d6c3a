//! A QR code as a picture, so that an address or a key can go from this screen to a phone's
//! camera without a network.

use gtk::prelude::*;
use gtk::{gdk, glib};

/// Pixels per module, and modules of white around the code (the standard's quiet zone).
const SCALE: usize = 5;
const QUIET: usize = 4;

/// The code of `text` as a picture; None when the text does not fit in a QR code.
pub fn picture(text: &str, accessible_name: &str) -> Option<gtk::Picture> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).ok()?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![0xffu8; side * side * 3];
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = ((index % modules + QUIET) * SCALE, (index / modules + QUIET) * SCALE);
        for row in y..y + SCALE {
            let start = (row * side + x) * 3;
            pixels[start..start + SCALE * 3].fill(0);
        }
    }
    let texture = gdk::MemoryTexture::new(
        side as i32,
        side as i32,
        gdk::MemoryFormat::R8g8b8,
        &glib::Bytes::from_owned(pixels),
        side * 3,
    );
    let picture = gtk::Picture::for_paintable(&texture);
    picture.set_can_shrink(false);
    picture.set_halign(gtk::Align::Center);
    crate::window::describe(&picture, accessible_name, None);
    Some(picture)
}
