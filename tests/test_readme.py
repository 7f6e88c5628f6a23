"""The README's two set-up commands exist, and CI runs the second one verbatim."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text().splitlines()
    fence = readme.index("```bash")
    main_job, test_cmd = readme[fence + 1], readme[fence + 2]
    assert "kge train --dataset kinships" in main_job and "pip install" in main_job
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci


def test_builtin_data_ships_in_the_package():
    for ds in ("kinships", "umls", "nations"):
        for split in ("train", "valid", "test"):
            assert (ROOT / "kgengine" / "datasets" / ds / f"{split}.txt").is_file()
