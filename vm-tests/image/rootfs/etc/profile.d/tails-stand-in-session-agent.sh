# Stand-in only: amnesia's autologin shell on tty1 becomes the session agent (see
# /usr/local/lib/tails-stand-in-session-agent).
if [ "$(id -un)" = amnesia ] && [ "$(tty)" = /dev/tty1 ]; then
    exec /usr/local/lib/tails-stand-in-session-agent
fi
