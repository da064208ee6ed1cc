"""``civicml projects`` and ``civicml experiments``."""

from __future__ import annotations

from typing import Annotated

import typer

from civicml.cli._common import JsonOpt, ProjectOpt, client, console, fmt_time, print_json, table

projects_app = typer.Typer(
    help="Projects: every run, model and dataset belongs to one.", no_args_is_help=True
)
experiments_app = typer.Typer(help="Experiments: named groups of runs.", no_args_is_help=True)


@projects_app.command("list")
def list_projects(json_: JsonOpt = False) -> None:
    """List projects."""
    with client() as ml:
        found = ml.projects()
    if json_:
        print_json(found)
        return
    table(
        "Projects",
        ["name", "created", "by", "description"],
        [[p.name, fmt_time(p.created_at), p.created_by, p.description] for p in found],
    )


@projects_app.command("create")
def create_project(
    name: str, description: Annotated[str, typer.Option()] = "", json_: JsonOpt = False
) -> None:
    """Create a project."""
    with client() as ml:
        project = ml.create_project(name, description=description).info
    if json_:
        print_json(project)
    else:
        console.print(f"Created project {project.name}")


@projects_app.command("show")
def show_project(name: str, json_: JsonOpt = False) -> None:
    """Show one project."""
    with client() as ml:
        project = ml.backend.get_project(name)
    if json_:
        print_json(project)
    else:
        table(
            f"Project {project.name}",
            ["field", "value"],
            [
                ["id", project.id],
                ["created", fmt_time(project.created_at)],
                ["by", project.created_by],
                ["description", project.description],
            ],
        )


@projects_app.command("members")
def members(name: str, json_: JsonOpt = False) -> None:
    """List who holds which role on a project by grant."""
    with client() as ml:
        found = ml.backend.project_members(name)
    if json_:
        print_json(found)
        return
    table(
        f"Members of {name}",
        ["user", "role", "granted", "by"],
        [[g.user, g.role, fmt_time(g.granted_at), g.granted_by] for g in found],
    )


@projects_app.command("grant")
def grant(
    name: str,
    user: Annotated[str, typer.Argument(help="The user or service account.")],
    role: Annotated[str, typer.Argument(help="A role: civicml projects roles lists them.")],
    json_: JsonOpt = False,
) -> None:
    """Grant a role on a project to a user (needs members.write: a project admin)."""
    with client() as ml:
        found = ml.backend.grant_role(name, user, role)
    if json_:
        print_json(found)
    else:
        console.print(f"{found.user} holds {found.role} on {name}.")


@projects_app.command("revoke")
def revoke(
    name: str,
    user: Annotated[str, typer.Argument(help="The user or service account.")],
    role: Annotated[str, typer.Argument(help="The role to take away.")],
) -> None:
    """Take a role on a project away from a user (needs members.write)."""
    with client() as ml:
        ml.backend.revoke_role(name, user, role)
    console.print(f"{user} no longer holds {role} on {name}.")


@projects_app.command("roles")
def roles(json_: JsonOpt = False) -> None:
    """List the roles (built in and [custom_roles]) and the permissions each gives."""
    from civicml.core.permissions import PERMISSIONS, role_table
    from civicml.core.settings import Settings

    table_ = role_table(Settings.load().custom_roles)
    if json_:
        print_json({name: sorted(perms) for name, perms in sorted(table_.items())})
        return
    table(
        "Roles",
        ["role", "permissions"],
        [
            [name, ", ".join(p for p in PERMISSIONS if p in perms) or "(a label: none)"]
            for name, perms in table_.items()
        ],
    )


@experiments_app.command("list")
def list_experiments(project: ProjectOpt = "default", json_: JsonOpt = False) -> None:
    """List the experiments of a project."""
    with client() as ml:
        found = ml.backend.list_experiments(project)
    if json_:
        print_json(found)
        return
    table(
        f"Experiments of {project}",
        ["name", "created", "by"],
        [[e.name, fmt_time(e.created_at), e.created_by] for e in found],
    )


@experiments_app.command("create")
def create_experiment(
    name: str,
    project: ProjectOpt = "default",
    description: Annotated[str, typer.Option()] = "",
    json_: JsonOpt = False,
) -> None:
    """Create an experiment."""
    with client() as ml:
        exp = ml.backend.create_experiment(project, name, description)
    if json_:
        print_json(exp)
    else:
        console.print(f"Created experiment {exp.name} in {project}")
