"""The dashboard's launch command carries the project's Streamlit settings, wherever it is started from."""
import subprocess
import sys

from dashboard.launch import APP, CONFIG, settings, streamlit_command


def _flag(command: list[str], name: str) -> str:
    return command[command.index(f"--{name}") + 1]


def test_the_command_carries_every_setting_of_the_config_file():
    command = streamlit_command(8765)
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(APP)]
    assert _flag(command, "server.port") == "8765"
    assert _flag(command, "server.maxUploadSize") == "1024"  # set explicitly, as the upload page promises
    assert _flag(command, "server.address") == "127.0.0.1"  # localhost only by default
    assert _flag(command, "server.headless") == "true"
    assert _flag(command, "client.toolbarMode") == "minimal"
    assert set(settings()) == {name[2:] for name in command[5:] if name.startswith("--")} - {"server.port"}


def test_overrides_win_and_the_repo_root_config_is_the_same_file():
    assert _flag(streamlit_command(1, {"server.maxUploadSize": 3}), "server.maxUploadSize") == "3"
    root_config = APP.parents[1] / ".streamlit" / "config.toml"
    assert root_config.resolve() == CONFIG.resolve()


def test_streamlit_accepts_every_flag(tmp_path):
    """A renamed or misspelt option would make `streamlit run` exit at start; `config show` parses the same flags."""
    flags = streamlit_command(8765)[5:]
    result = subprocess.run([sys.executable, "-m", "streamlit", "config", "show", *flags], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "maxUploadSize = 1024" in result.stdout
