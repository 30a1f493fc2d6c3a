"""Drives tails-server-gui over AT-SPI with Dogtail, as Tails' own test suite drives its
applications: widgets found by role and accessible name, acted on through their actions,
never by screen coordinates. Run by tests/gui_atspi.rs, which starts the service, checks
what this script did against it, and reads what it prints (one "KEY value" line per fact).

Usage: drive_window.py BINARY PASSPHRASE DUMP PHASE
PHASE "invite": add a custom service "shared" with bob as its first friend, publish it,
invite alice and show her key (after the Persistent Storage passphrase); "language" (the
window in a made-up language): say every accessible name and description of the services
page with shared's details open and of the Add window; "revoke": revoke alice, remove
"shared" (each behind its question)."""

import subprocess
import sys
import time

from dogtail import config

config.searchShowingOnly = False  # GTK 4.8 reports nothing below the window as showing
config.logDebugToStdOut = False
config.logDebugToFile = False
config.searchCutoffCount = 100  # retries of 0.5 s: up to 50 s for a widget to appear
from dogtail import rawinput, tree  # noqa: E402 (after config)

binary, passphrase, dump_to, phase = sys.argv[1:5]


def wait_for(what, condition, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("waited %d s for %s" % (seconds, what))
        time.sleep(0.1)


# The same roles under other names: at-spi2-core 2.46 (Debian 12, GTK 4.8) names them as the
# keys, 2.56 (Debian 13, GTK 4.18, Tails 7) as the values; GTK 4.18 also gives switches and
# libadwaita 1.7's dialogs roles of their own.
ROLES = {
    "push button": {"push button", "button", "toggle button"},
    "check box": {"check box", "switch", "toggle button"},
    "dialog": {"dialog", "alert", "alert dialog"},
    "frame": {"frame", "window"},
    "text": {"text", "entry"},
    "password text": {"password text"},
}


def find(parent, name, role, seconds=30):
    """The descendant of that role whose name is `name`, waiting for it to appear. GTK 4.8
    appends a row's title to the name of the row's activatable widget (4.18 does not): a
    name that starts with `name` and a space counts."""
    roles = ROLES.get(role, {role})

    def matches(node):
        return node.roleName in roles and (node.name == name or node.name.startswith(name + " "))

    found = []

    def look():
        found.append(parent.findChild(matches, retry=False, requireResult=False))
        return found[-1]

    wait_for("%s %r" % (role, name), look, seconds)
    return found[-1]


def described(parent, description, seconds=30):
    """The label described as `description` (its name is its text)."""
    found = []

    def look():
        found.append(parent.findChild(lambda n: n.roleName == "label" and n.description == description,
                                      retry=False, requireResult=False))
        return found[-1]

    wait_for("the label described as %r" % description, look, seconds)
    return found[-1]


def click_until(button, name, role, seconds=30):
    """Clicks `button` until what it opens appears (a click before the window has heard
    from the service does nothing)."""
    deadline = time.monotonic() + seconds
    while True:
        button.doActionNamed("click")
        try:
            return find(app, name, role, 2)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def act(node, *names):
    """Does the first of the actions `names` the node offers (their names differ between
    GTK versions: a switch toggles in 4.8, is clicked in 4.18)."""
    offered = list(node.actions.keys())
    for name in names:
        if name in offered:
            return node.doActionNamed(name)
    raise RuntimeError("%s %r offers none of %s, only %s" % (node.roleName, node.name, names, offered))


def type_over(text):
    """Replaces the focused field's text by typing."""
    rawinput.keyCombo("<Control>a")
    rawinput.typeText(text)


def fresh():
    """The application's node looked up again, with nothing cached below it."""
    return tree.root.application("tails-server-gui")


def say(key, *values):
    print(key, *values, flush=True)


def dump(node, out, depth=0):
    out.write("  " * depth + f"{node.roleName!r} {node.name!r}\n")
    for child in node.children:
        dump(child, out, depth + 1)


# Its messages go to a file beside the tree, read when a phase fails.
window_log = open(dump_to + ".window-log", "w")
window = subprocess.Popen([binary], stderr=window_log)
app = None
try:
    app = tree.root.application("tails-server-gui")
    if phase == "invite":
        add = find(app, "Add a service", "push button")
        adding = click_until(add, "Add a Service", "frame")
        find(adding, "Choose Custom service", "push button").doActionNamed("click")
        find(adding, "Local port", "text")
        # GTK 4.8 offers no editable text over AT-SPI: typed, as a person does. The name has
        # the focus once a kind is chosen; Tab goes to the next field.
        type_over("shared")
        rawinput.pressKey("Tab")
        type_over("bob")
        rawinput.pressKey("Tab")
        type_over("9000")
        find(adding, "Add", "push button").doActionNamed("click")
        switch = find(app, "Publish shared", "check box")
        act(switch, "toggle", "click", "activate")
        wait_for("the switch on", lambda: switch.checked)
        act(find(app, "Details of shared", "push button"), "click", "toggle", "activate")
        find(app, "Invite a friend to shared", "push button").doActionNamed("click")
        question = find(app, "Invite a Friend to shared", "dialog")
        find(question, "Your friend's name", "text")
        rawinput.typeText("alice")  # the name field has the focus
        find(question, "Invite", "push button").doActionNamed("click")
        question = find(app, "Enter Your Persistent Storage Passphrase", "dialog")
        find(question, "Persistent Storage passphrase", "password text")
        # The passphrase field has the focus.
        rawinput.typeText(passphrase)
        find(question, "Continue", "push button").doActionNamed("click")
        sheet = find(app, "Invite a Friend", "frame")
        say("ADDRESS", described(sheet, "The address").name)
        find(sheet, "Next: The Key", "push button").doActionNamed("click")
        say("KEY", described(sheet, "The key").name)
        find(sheet, "Done", "push button").doActionNamed("click")
    elif phase == "language":
        # Every message is bracketed in this language (tests/common/language.rs).
        act(find(app, "⟦Details of ⟧shared", "push button"), "click", "toggle", "activate")
        adding = click_until(find(app, "⟦Add a service⟧", "push button"), "⟦Add a Service⟧", "frame")
        find(adding, "⟦Choose ⟧⟦Custom service⟧", "push button")

        def every(node):
            yield node
            for child in node.children:
                yield from every(child)

        for node in every(fresh()):
            for text in (node.name, node.description):
                if text:
                    say("SAYS", text.replace("\n", " "))
    elif phase == "revoke":
        act(find(app, "Details of shared", "push button"), "click", "toggle", "activate")
        find(app, "Revoke alice's key", "push button").doActionNamed("click")
        question = find(app, "Revoke alice's Key?", "dialog")
        find(question, "Revoke", "push button").doActionNamed("click")
        wait_for("alice gone", lambda: not fresh().findChild(
            lambda n: n.name.startswith("Revoke alice's key"), retry=False, requireResult=False))
        find(app, "Remove shared", "push button").doActionNamed("click")
        question = find(app, "Remove shared?", "dialog")
        find(question, "Remove", "push button").doActionNamed("click")
        wait_for("shared gone", lambda: not fresh().findChild(
            lambda n: n.name == "shared", retry=False, requireResult=False))
    say("DONE", phase)
finally:
    if app is not None:
        with open(dump_to, "w") as out:
            dump(app, out)
    window.kill()
