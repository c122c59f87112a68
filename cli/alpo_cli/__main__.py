from alpo_cli.app import main

main()
