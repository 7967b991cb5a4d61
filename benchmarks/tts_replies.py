"""Movie-assistant replies for the TTS intelligibility benchmark (the kind of text the orchestrator sends)."""

REPLIES = [
    "I recommend Toy Story from 1995. It is an animated comedy about toys that come to life.",
    "You might enjoy Groundhog Day. Bill Murray lives the same day over and over again.",
    "How about Clueless? It is a teen comedy from 1995 set in Beverly Hills.",
    "Here are three comedies from the nineties: Clueless, Groundhog Day and Dumb and Dumber.",
    "The Shawshank Redemption is rated 4.5 out of 5 by our users.",
    "If you liked Heat, try The Usual Suspects. It is a crime thriller with a famous twist.",
    "Star Wars was released in 1977. It is a science fiction adventure.",
    "I found two horror movies for you: Scream and The Silence of the Lambs.",
    "Fargo is a dark comedy from the Coen brothers. It came out in 1996.",
    "Would you like another suggestion?",
    "Sure. Pulp Fiction is a crime film from 1994 with a great cast.",
    "Sorry, I could not find that title. Could you say it again?",
    "Here is a romantic comedy: Sleepless in Seattle, from 1993.",
    "Jurassic Park is an adventure film about dinosaurs on an island.",
    "Forrest Gump won the award for best picture in 1995.",
    "The Lion King is a great choice for a family movie night.",
    "I think you will like Braveheart. It is a long historical drama.",
    "Based on your ratings, I suggest Twelve Monkeys and The Fugitive.",
    "Casablanca is a classic romance from 1942.",
    "Do you prefer action or drama tonight?",
    "Apollo 13 tells the true story of a space mission that almost failed.",
    "Mrs. Doubtfire is a family comedy with Robin Williams.",
    "Men in Black is a science fiction comedy from 1997.",
    "Titanic is one of the most popular movies in our catalogue.",
    "You rated Fargo five stars. Here is something similar: Raising Arizona.",
    "The Godfather Part II is a crime drama from 1974.",
    "Good choice. Enjoy the movie!",
    "I have added that movie to your list.",
    "Here are the top rated dramas: Schindler's List, Casablanca and Star Wars.",
    "Independence Day is an action movie about an alien invasion.",
    "Babe is a gentle family film about a pig who wants to herd sheep.",
    "Dr. Strangelove is a satire from 1964 about the cold war.",
    "Back to the Future is a time travel comedy from 1985.",
    "Try Good Will Hunting. It is a drama about a young genius in Boston.",
    "Contact is a science fiction drama about a message from space.",
    "The Full Monty is a British comedy from 1997.",
    "Die Hard is an action thriller set in a tall office building.",
    "Aladdin is an animated musical with many songs.",
    "I could not understand the request. Please ask for a genre or a title.",
    "The English Patient is a romantic war drama with nine awards.",
    "Batman Forever is an action movie from 1995.",
    "Here is a quiet drama: Sense and Sensibility, from 1995.",
    "Liar Liar is a comedy with Jim Carrey about a lawyer who cannot lie.",
    "Would you like a comedy, a thriller or a romance?",
    "Alien is a science fiction horror film from 1979.",
    "The Princess Bride is a fairy tale adventure with a lot of humor.",
    "Speed is an action film about a bomb on a city bus.",
    "Mission Impossible is a spy thriller from 1996.",
    "Thank you for your rating. I will use it for your next suggestions.",
    "There are 1682 movies in our catalogue.",
    "Jerry Maguire is a sports drama about an agent and his last client.",
    "Sabrina is a romantic comedy from 1995 with Harrison Ford.",
    "I suggest Monty Python and the Holy Grail. It is a silly comedy from 1975.",
    "The Rock is an action movie set on Alcatraz island.",
    "Blade Runner is a science fiction classic from 1982.",
    "That is all for now. Have a great evening!",
]

PARAGRAPH = (
    "Here are a few comedies from the nineties that our users love. Clueless is a teen comedy from 1995, "
    "set in Beverly Hills. Groundhog Day, from 1993, follows a weatherman who lives the same day again and "
    "again. Dumb and Dumber is a silly road trip movie with Jim Carrey. If you would like something calmer, "
    "The Full Monty is a warm British comedy from 1997. Would you like to hear more?"
)

TWO_SENTENCES = "I recommend Toy Story from 1995. It is an animated comedy about toys that come to life."
