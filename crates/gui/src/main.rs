//! `tails-server-gui`: the window for a person's onion services.

use adw::prelude::*;

fn main() -> gtk::glib::ExitCode {
    let application = adw::Application::builder().application_id(tails_server_gui::APP_ID).build();
    application.connect_activate(|application| {
        // One window: activating the application again shows it.
        if let Some(window) = application.active_window() {
            return window.present();
        }
        let window = tails_server_gui::window::Window::new(Some(application));
        window.widget().present();
        window.start();
    });
    application.run()
}
