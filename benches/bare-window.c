/* A bare libadwaita window (a header bar and a status page), to compare the window's
 * memory with what GTK and libadwaita take by themselves on the same display. Prints its
 * peak resident memory (VmHWM) once it has drawn three frames, then quits. */
#include <adwaita.h>
#include <stdio.h>
#include <string.h>

static int paints;

static void report(void) {
  char line[256];
  FILE *status = fopen("/proc/self/status", "r");
  if (!status)
    return;
  while (fgets(line, sizeof line, status))
    if (strncmp(line, "VmHWM:", 6) == 0)
      fputs(line, stdout);
  fclose(status);
}

static void after_paint(GdkFrameClock *clock, gpointer window) {
  (void)clock;
  if (++paints < 3) {
    gtk_widget_queue_draw(GTK_WIDGET(window));
    return;
  }
  /* Once: no later frame reports again, nor reaches the window destroyed here. */
  g_signal_handlers_disconnect_by_func(clock, after_paint, window);
  report();
  gtk_window_destroy(GTK_WINDOW(window));
}

static void on_map(GtkWidget *window, gpointer data) {
  (void)data;
  g_signal_connect(gtk_widget_get_frame_clock(window), "after-paint", G_CALLBACK(after_paint), window);
  gtk_widget_queue_draw(window);
}

static void activate(GtkApplication *app) {
  GtkWidget *window = adw_application_window_new(app);
  GtkWidget *box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 0);
  GtkWidget *page = adw_status_page_new();
  adw_status_page_set_title(ADW_STATUS_PAGE(page), "Onion Services");
  adw_status_page_set_icon_name(ADW_STATUS_PAGE(page), "network-server-symbolic");
  gtk_box_append(GTK_BOX(box), adw_header_bar_new());
  gtk_box_append(GTK_BOX(box), page);
  adw_application_window_set_content(ADW_APPLICATION_WINDOW(window), box);
  gtk_window_set_default_size(GTK_WINDOW(window), 720, 560);
  g_signal_connect(window, "map", G_CALLBACK(on_map), NULL);
  gtk_window_present(GTK_WINDOW(window));
}

int main(void) {
  AdwApplication *app = adw_application_new("org.boum.tails.Server.Baseline", G_APPLICATION_NON_UNIQUE);
  g_signal_connect(app, "activate", G_CALLBACK(activate), NULL);
  return g_application_run(G_APPLICATION(app), 0, NULL);
}
