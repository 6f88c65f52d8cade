#!/usr/bin/env bash
# System packages the suite's real servers need, installed when missing (run by tox before
# the tests, so `tox -e tests` alone sets up a fresh Debian machine): OpenSSH's sshd for the
# SFTP tests (Debian's openssh-server; it brings ssh-keygen). Needs root or sudo.
set -euo pipefail
if [ ! -x /usr/sbin/sshd ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssh-server
fi
