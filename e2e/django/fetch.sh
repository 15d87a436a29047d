#!/bin/sh
# Fetches Django 4.2 (Debian trixie) and 5.2 (Debian sid) as Debian packages
# and unpacks each, with the asgiref it needs, under e2e/django/<version>/,
# for TestDjangoPackage to run contrib/django's tests on them as well as on
# the system's Django 3.2 (bookworm); and trixie's psycopg 3 (python3-psycopg
# 3.2, with the typing-extensions it needs) under e2e/django/psycopg3/, since
# bookworm's 3.1.7 is older than the 3.1.8 Django 4.2 and 5.2 require.
# Nothing is installed: apt reads its own sources list and state here, and
# dpkg-deb only unpacks.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/dl"
printf 'deb http://deb.debian.org/debian trixie main\ndeb http://deb.debian.org/debian sid main\n' >"$work/sources.list"
set -- -o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null \
	-o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o Dir::State::Status=/var/lib/dpkg/status \
	-o APT::Sandbox::User=root
apt-get "$@" update -qq
cd "$work/dl"
apt-get "$@" download -qq 'python3-django=3:4.2*' 'python3-django=3:5.2*' 'python3-asgiref/trixie' \
	'python3-psycopg/trixie' 'python3-typing-extensions/trixie'
for v in 4.2 5.2; do
	rm -rf "${here:?}/$v"
	mkdir -p "$here/$v"
	dpkg-deb -x python3-django_*"$v".*_all.deb "$here/$v"
	dpkg-deb -x python3-asgiref_*_all.deb "$here/$v"
done
rm -rf "${here:?}/psycopg3"
mkdir -p "$here/psycopg3"
dpkg-deb -x python3-psycopg_*_all.deb "$here/psycopg3"
dpkg-deb -x python3-typing-extensions_*_all.deb "$here/psycopg3"
