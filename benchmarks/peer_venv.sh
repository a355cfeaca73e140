# Sourced by the setup_*_env.sh scripts: a peer's virtual environment that sees the main .venv's packages.
#
# A peer (Neural Compressor, model2vec, ...) must not resolve torch again (an unpinned torch is a multi-GB CUDA
# build) nor change the main venv's versions; so its venv reads .venv's site-packages through a .pth file and
# installs only the peer itself on top.
#   make_peer_venv VENV MAIN_VENV     creates VENV (with $PYTHON, default python3.11) and links MAIN_VENV in

make_peer_venv() {
  local venv="$1" main_venv="$2" main_site site
  main_site="$("$main_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "${PYTHON:-python3.11}" -m venv "$venv"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # addsitedir, not a bare path: the main venv's own .pth files (kdcompress's editable install) must be read too.
  echo "import site; site.addsitedir('$main_site')" > "$site/kdcompress_main_venv.pth"
}
